"""Default-deny permissions: authentication plus a model or action permission."""

from rest_framework.permissions import BasePermission, DjangoModelPermissions


class ModelViewPermissions(DjangoModelPermissions):
    """Model permissions where reading needs the `view` permission too."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


def requires(*perms: str) -> type[BasePermission]:
    """A permission class that needs an authenticated user holding every one of `perms`."""

    class Required(BasePermission):
        message = f"You need the permission {', '.join(perms)}."

        def has_permission(self, request, view):
            user = request.user
            return bool(user and user.is_authenticated and user.has_perms(perms))

    Required.__name__ = "Requires_" + "_".join(p.split(".")[-1] for p in perms)
    return Required


def requires_any(*perms: str) -> type[BasePermission]:
    """A permission class that needs an authenticated user holding at least one of `perms`."""

    class RequiredAny(BasePermission):
        message = f"You need one of the permissions {', '.join(perms)}."

        def has_permission(self, request, view):
            user = request.user
            return bool(user and user.is_authenticated and any(user.has_perm(p) for p in perms))

    RequiredAny.__name__ = "RequiresAny_" + "_".join(p.split(".")[-1] for p in perms)
    return RequiredAny
