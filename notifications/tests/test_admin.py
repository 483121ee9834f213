"""The model registry and the scores in the admin: read-only (training and scoring write them);
a version is activated through the service."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from events.tests.factories import UserFactory
from notifications.models import ConversionScore, ModelMonitorSettings, ModelVersion
from notifications.tests.factories import ConversionScoreFactory, ModelVersionFactory

VERSIONS = "/admin/notifications/modelversion/"
SCORES = "/admin/notifications/conversionscore/"

pytestmark = pytest.mark.django_db


def _staff(*codenames: str) -> Client:
    user = UserFactory(is_staff=True)
    user.save()  # the factory sets the password after its save; the session checks its hash
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_activate_action_activates_through_the_service(admin_client, shop):
    old = ModelVersionFactory(shop=shop, is_active=True)
    new = ModelVersionFactory(shop=shop)

    response = admin_client.post(VERSIONS, {"action": "activate", "_selected_action": [new.pk]})
    old.refresh_from_db()
    new.refresh_from_db()

    assert response.status_code == 302
    assert (old.is_active, new.is_active) == (False, True)


def test_activating_takes_the_change_permission(shop):
    version = ModelVersionFactory(shop=shop)
    viewer = _staff("view_modelversion")

    viewer.post(VERSIONS, {"action": "activate", "_selected_action": [version.pk]})
    version.refresh_from_db()

    assert version.is_active is False


def test_model_versions_cannot_be_added_changed_or_deleted_in_the_admin(admin_client, shop):
    version = ModelVersionFactory(shop=shop)
    page = f"{VERSIONS}{version.pk}/change/"

    add = admin_client.get(f"{VERSIONS}add/")
    change = admin_client.post(page, {"path": "/elsewhere", "version": 99})
    delete = admin_client.post(f"{VERSIONS}{version.pk}/delete/", {"post": "yes"})
    version.refresh_from_db()

    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403
    assert (version.path, ModelVersion.objects.count()) == ("/nonexistent", 1)
    assert admin_client.get(page).status_code == 200


def test_scores_are_read_only_in_the_admin(admin_client):
    score = ConversionScoreFactory()

    listed = admin_client.get(SCORES)
    change = admin_client.post(f"{SCORES}{score.pk}/change/", {"score": 0.9})
    delete = admin_client.post(f"{SCORES}{score.pk}/delete/", {"post": "yes"})
    score.refresh_from_db()

    assert listed.status_code == 200
    assert (change.status_code, delete.status_code) == (403, 403)
    assert (score.score, ConversionScore.objects.count()) == (0.25, 1)


MONITOR_SETTINGS = "/admin/notifications/modelmonitorsettings/add/"
MONITOR_FORM = {
    "window_days": 7, "min_samples": 200, "min_per_class": 10, "auc_floor": 0.6,
    "auc_margin": 0.05, "ece_max": 0.05, "psi_max": 0.25,
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window_days", 0),
        ("window_days", 91),
        ("min_samples", 0),
        ("min_per_class", 0),
        ("auc_floor", 1.5),
        ("auc_margin", -0.1),
        ("ece_max", 2),
        ("psi_max", -1),
        ("psi_max", "x"),
    ],
)
def test_the_admin_refuses_model_monitor_thresholds_out_of_range(admin_client, shop, field, value):
    response = admin_client.post(MONITOR_SETTINGS, {**MONITOR_FORM, "shop": shop.pk, field: value})

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert not ModelMonitorSettings.objects.exists()


def test_the_admin_saves_model_monitor_thresholds(admin_client, shop):
    response = admin_client.post(
        MONITOR_SETTINGS, {**MONITOR_FORM, "shop": shop.pk, "psi_max": 0.3}
    )

    assert response.status_code == 302
    assert ModelMonitorSettings.objects.get(shop=shop).psi_max == 0.3
