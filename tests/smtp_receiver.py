"""A tiny SMTP server on loopback for the e-mail connector's failure modes.

It speaks just enough SMTP for smtplib (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
records what it receives, and can refuse the greeting, the login or the recipients, or never
greet at all (a hang released when the receiver stops).
"""

import base64
import contextlib
import socketserver
import threading
from dataclasses import dataclass, field

HANG_LIMIT_SECONDS = 30


@dataclass
class SmtpSession:
    logins: list[tuple[str, str]] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)


class SmtpReceiver:
    """Use as a context manager; `host`/`port` are where it listens."""

    def __init__(
        self,
        *,
        greeting: str = "220 cavra-test ESMTP ready",
        accept_login: tuple[str, str] | None = None,
        refuse_recipients: bool = False,
        hang: bool = False,
        reply_with: str = "",
    ) -> None:
        self.session = SmtpSession()
        self.stopping = threading.Event()
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                if hang:
                    receiver.stopping.wait(HANG_LIMIT_SECONDS)
                    return
                with contextlib.suppress(OSError):
                    self.converse()

            def converse(self) -> None:
                self.reply(greeting)
                if not greeting.startswith("220"):
                    return
                while line := self.rfile.readline():
                    command = line.decode().rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb in {"EHLO", "HELO"}:
                        self.wfile.write(b"250-cavra-test\r\n250-AUTH PLAIN\r\n250 OK\r\n")
                        self.wfile.flush()
                    elif verb == "AUTH":
                        decoded = base64.b64decode(command.split(" ")[2]).split(b"\0")
                        login = (decoded[1].decode(), decoded[2].decode())
                        receiver.session.logins.append(login)
                        if accept_login is None or login == accept_login:
                            self.reply("235 2.7.0 Authentication successful")
                        else:
                            # Real servers quote the account back: the product must not log it.
                            self.reply(f"535 5.7.8 Authentication failed for {login[0]}")
                    elif verb == "MAIL":
                        receiver.session.senders.append(command)
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        receiver.session.recipients.append(command)
                        if refuse_recipients:
                            self.reply(f"550 5.1.1 No such user: {command}")
                        else:
                            self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        body = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            body += chunk
                        receiver.session.messages.append(body)
                        self.reply(reply_with or "250 OK queued")
                    elif verb in {"RSET", "NOOP"}:
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 Bye")
                        return
                    else:
                        self.reply("502 Command not implemented")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> "SmtpReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
