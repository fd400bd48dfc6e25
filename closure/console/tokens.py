"""The signed-in user's own API tokens: list them, create one, revoke one.

Every signed-in user may hold tokens: a token acts with exactly its user's permissions, so it
grants nothing a session does not. A created token's raw value is on the page that answers
the POST and nowhere else (not in a message, the session or a redirect), with caching
forbidden. Another user's token is "not found" here, whatever its id.
"""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from closure.console.forms import ConsoleForm
from closure.console.views import PAGE_SIZE, console_view, form_action
from closure.models import ApiToken
from closure.paginators import BoundedCountPaginator
from closure.services.errors import NotFound, ServiceError
from closure.services.tokens import (
    MAX_NAME_LENGTH,
    MAX_TOKEN_DAYS,
    api_token_create,
    api_token_revoke,
)

# Any signed-in user (the login-required middleware turns the others away).
SIGNED_IN: tuple[str, ...] = ()


class ApiTokenForm(ConsoleForm):
    name = forms.CharField(
        max_length=MAX_NAME_LENGTH,
        help_text="What the token is for (a pipeline, a bot), shown in the list.",
    )
    days = forms.IntegerField(
        min_value=1,
        max_value=MAX_TOKEN_DAYS,
        initial=lambda: settings.CAVRA_API_TOKEN_DAYS,
        label="Lifetime in days",
        help_text="The token stops working when it ends.",
    )


@never_cache
@console_view(get=SIGNED_IN, post=SIGNED_IN)
def api_token_list(request):
    """GET: the user's tokens, newest first. POST: create one; the answer shows it once."""
    form = ApiTokenForm(request.POST or None)
    response, status = form_action(
        request,
        form,
        lambda data: api_token_create(
            actor=request.user, user=request.user, name=data["name"], days=data["days"]
        ),
        # The raw token is shown on this answer only, never through a redirect.
        lambda issued: render(
            request,
            "closure/console/api_token_issued.html",
            {"issued": issued, "nav": "api-tokens"},
        ),
    )
    if response is not None:
        return response
    now = timezone.now()
    paginator = BoundedCountPaginator(
        ApiToken.objects.filter(user=request.user).newest_first(), PAGE_SIZE
    )
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "closure/console/api_token_list.html",
        {
            "form": form,
            "page": page,
            "paginator": paginator,
            "rows": [(token, token.state(now)) for token in page.object_list],
            "nav": "api-tokens",
        },
        status=status,
    )


@require_POST
def api_token_revoke_view(request, token_pk: int):
    """Revoke one of the user's own tokens."""
    try:
        revoked = api_token_revoke(actor=request.user, token_pk=token_pk, owner=request.user)
    except NotFound:
        raise Http404("No such API token.") from None
    except ServiceError as exc:
        messages.error(request, f"Not revoked: {exc.detail}.")
    else:
        token = revoked.token
        messages.success(
            request,
            f"Token {token.token_prefix}… ({token.name}) revoked: it no longer authenticates. "
            f"Recorded as evidence #{revoked.evidence.sequence}.",
        )
    return redirect("console:api-token-list")
