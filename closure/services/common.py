"""Small pieces shared by the services."""

from closure.evidence.canonical import isoformat


def signer_of(actor) -> str:
    """The evidence signer: the authenticated user's username, never a name from a request."""
    return actor.get_username()


def actor_summary(actor) -> dict:
    return {"username": actor.get_username(), "user_id": actor.pk}


__all__ = ["actor_summary", "isoformat", "signer_of"]
