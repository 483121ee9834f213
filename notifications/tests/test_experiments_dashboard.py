"""The dashboard's Experiments page without a browser: access, nav and the headline config."""

from datetime import UTC, datetime

import pytest
from django.test import Client

from notifications.experiments import services
from notifications.experiments.rules import VariantIn
from notifications.models import ExperimentResult

pytestmark = pytest.mark.django_db
PATH = "/experiments-dashboard/"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def client_for(settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False

    def make(user) -> Client:
        user.set_password("pw-for-tests")
        user.save()
        client = Client()
        assert client.login(username=user.username, password="pw-for-tests")
        return client

    return make


def experiment_with_result(shop):
    experiment = services.experiment_create(
        shop=shop,
        key="button",
        name="Button colour",
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=[VariantIn(key="control", weight=1, is_control=True), VariantIn("b", 1)],
    )
    experiment = services.experiment_start(experiment=experiment, now=T0)
    row = {"mean": 0.12, "p_value": 0.01, "is_significant": True}
    relative = {"estimate": 0.2, "ci_low": 0.05, "ci_high": 0.35}
    data = {
        "primary_metric": "conversion",
        "metrics": [{"name": "conversion", "label": "conversion", "winsor_cap": None}],
        "arms": [
            {"variant": "control", "name": "", "is_control": True, "metrics": {"conversion": {}}},
            {"variant": "b", "name": "Blue", "is_control": False,
             "metrics": {"conversion": row | {"relative": relative}}},
        ],
        "verdict": "Variant Blue raised conversion by 2.0 pp (95 % CI 0.5–3.5).",
    }  # fmt: skip
    ExperimentResult.objects.create(experiment=experiment, phase=1, data=data, computed_at=T0)
    return experiment


def config_of(response) -> dict:
    return response.context["config"]


def test_the_page_needs_a_login():
    response = Client().get(PATH)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={PATH}"


def test_a_member_sees_the_page_with_its_nav_entry_and_no_period_picker(user, shop, client_for):
    response = client_for(user).get(f"{PATH}?shop={shop.domain}")

    html = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert f'<a href="{PATH}?' in html
    assert 'aria-current="page">Experiments</a>' in html
    assert 'id="start"' not in html
    assert 'class="presets"' not in html
    assert "notifications/experiments.js" in html
    assert config_of(response)["page"] == "experiments"


def test_other_pages_list_experiments_in_the_nav(user, shop, client_for):
    html = client_for(user).get(f"/traffic/?shop={shop.domain}").content.decode()

    assert f'<a href="{PATH}?' in html
    assert 'id="start"' in html


def test_another_shop_is_not_found(user, shop, other_shop, client_for):
    response = client_for(user).get(f"{PATH}?shop={other_shop.domain}")

    assert response.status_code == 404


def test_the_config_holds_the_selection_and_each_stored_headline(user, shop, client_for):
    experiment = experiment_with_result(shop)

    config = config_of(
        client_for(user).get(f"{PATH}?shop={shop.domain}&experiment={experiment.pk}")
    )

    assert config["experiment"] == experiment.pk
    assert config["headlines"] == {
        str(experiment.pk): {
            "metric": "conversion",
            "verdict": "Variant Blue raised conversion by 2.0 pp (95 % CI 0.5–3.5).",
            "variant": "Blue",
            "uplift": {"estimate": 0.2, "ci_low": 0.05, "ci_high": 0.35},
            "is_significant": True,
        }
    }


def test_the_headlines_read_only_the_current_phase_of_the_shops_experiments(
    user, shop, other_shop, client_for
):
    experiment_with_result(other_shop)

    config = config_of(client_for(user).get(f"{PATH}?shop={shop.domain}"))

    assert config["headlines"] == {}
    assert config["experiment"] is None
