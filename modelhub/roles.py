"""Roles are Django groups made by a migration; checks here are the single source of truth."""

from __future__ import annotations

from typing import Any

from modelhub.errors import Forbidden

VIEWER = "viewer"
MAINTAINER = "maintainer"
APPROVER = "approver"
ROLES = (VIEWER, MAINTAINER, APPROVER)

_VIEW = ["registeredmodel", "modelversion", "dataset", "readinessprofile", "variant", "optimizationjob",
         "benchmarkresult", "deployment", "promotionevent", "regression", "governingprofile", "governingprofilechange"]
# Django admin permissions each role's group holds (the services check roles themselves).
ROLE_PERMISSIONS: dict[str, list[str]] = {
    VIEWER: [f"view_{m}" for m in _VIEW],
    MAINTAINER: [f"view_{m}" for m in _VIEW]
    + ["add_registeredmodel", "change_registeredmodel", "add_modelversion", "add_dataset", "add_readinessprofile",
       "change_readinessprofile", "add_optimizationjob", "change_optimizationjob", "add_governingprofile",
       "change_governingprofile"],
    APPROVER: [f"view_{m}" for m in _VIEW] + ["change_deployment", "add_promotionevent"],
}


def sync_role_groups(group_model: Any, permission_model: Any) -> None:
    """Create the role groups with their permissions (used by the migration and by test set-up)."""
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.set(permission_model.objects.filter(content_type__app_label="modelhub",
                                                              codename__in=codenames))


def sync_role_groups_in_migration(apps: Any) -> None:
    """Give the role groups their permissions from inside a migration. Django makes permissions only
    after all migrations have run; a migration that adds a model the roles need makes them now."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    sync_role_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def has_role(user: Any, role: str) -> bool:
    """True when the user is active and in the role's group (superusers hold every role)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=role).exists()


def require(user: Any, role: str, action: str) -> None:
    """Raise Forbidden, naming the role and the action, unless the user holds ``role``."""
    if not has_role(user, role):
        raise Forbidden(f"You need the {role} role to {action}.")


def can_upload_torchscript(user: Any) -> bool:
    """TorchScript archives carry code: only users trusted with this permission may upload them."""
    return has_role(user, MAINTAINER) and user.has_perm("modelhub.upload_torchscript")
