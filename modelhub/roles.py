"""Roles are Django groups made by a migration; checks here are the single source of truth."""

from __future__ import annotations

from typing import Any

VIEWER = "viewer"
MAINTAINER = "maintainer"
APPROVER = "approver"
ROLES = (VIEWER, MAINTAINER, APPROVER)


def has_role(user: Any, role: str) -> bool:
    """True when the user is active and in the role's group (superusers hold every role)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=role).exists()


def can_upload_torchscript(user: Any) -> bool:
    """TorchScript archives carry code: only users trusted with this permission may upload them."""
    return has_role(user, MAINTAINER) and user.has_perm("modelhub.upload_torchscript")
