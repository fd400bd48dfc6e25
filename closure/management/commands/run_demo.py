from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from closure.demo import DEMO_PASSWORD, DEMO_USERS, DemoReceiver, demo_load, demo_token

B = "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"


class Command(BaseCommand):
    help = (
        "Migrate, load the demo flow (a degraded health report and an alert whose first "
        "delivery fails against a local receiver) and serve on 127.0.0.1:8000."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--receiver-port", type=int, default=8765)
        parser.add_argument("--no-serve", action="store_true", help="load and exit")

    def handle(self, *args, port, receiver_port, no_serve, **options):
        call_command("migrate", interactive=False, verbosity=0)
        receiver = DemoReceiver(receiver_port).start()
        loaded = demo_load(receiver_url=receiver.url)
        if settings.CAVRA_CONNECTORS_FILE:
            # Connectors of the deployment's own file join the demo's two webhooks.
            call_command("bootstrap_connectors", user="owner", file=settings.CAVRA_CONNECTORS_FILE)
        token = demo_token()
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "CAVRA closure demo " + ("loaded" if loaded else "(existing data kept)"),
                    f"  Evidence Console:       {base}/console/  (operators: start here)",
                    f"  Admin (auditors' tool): {base}/admin/",
                    f"  API root:               {base}/api/v1/",
                    f"  Closure dashboard:      {base}{B}/final-reporting-closure-dashboard",
                    f"  Log in as any of {', '.join(DEMO_USERS)} with password {DEMO_PASSWORD}",
                    f"  API token for operator (valid 1 day): {token}",
                    f"  Demo receiver on {receiver.url} (/flaky fails first attempts)",
                    "  Next: the console's flow page walks the five steps (README: Operator flow).",
                    "",
                ]
            )
        )
        if no_serve:
            receiver.stop()
            return
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
