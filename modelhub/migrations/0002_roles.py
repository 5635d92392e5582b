"""Create the viewer, maintainer and approver groups with the admin permissions each role needs."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = ["registeredmodel", "modelversion", "dataset", "readinessprofile", "variant", "optimizationjob",
        "benchmarkresult", "deployment", "promotionevent"]
ROLE_PERMISSIONS = {
    "viewer": [f"view_{m}" for m in VIEW],
    "maintainer": [f"view_{m}" for m in VIEW]
    + ["add_registeredmodel", "change_registeredmodel", "add_modelversion", "add_dataset", "add_readinessprofile",
       "change_readinessprofile", "add_optimizationjob", "change_optimizationjob"],
    "approver": [f"view_{m}" for m in VIEW] + ["change_deployment", "add_promotionevent"],
}


def create_roles(apps, schema_editor):
    # Permissions are normally made after all migrations; roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(Permission.objects.filter(content_type__app_label="modelhub", codename__in=codenames))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [("modelhub", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length"),
                    ("contenttypes", "0002_remove_content_type_name")]
    operations = [migrations.RunPython(create_roles, remove_roles)]
