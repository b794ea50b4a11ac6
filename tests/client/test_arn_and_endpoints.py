"""ARN checks and endpoint resolution: the mistakes users make, refused before any signing."""

from __future__ import annotations

import pytest

from rolesanywhere_hsm.arn import validate_session_arns
from rolesanywhere_hsm.endpoints import default_endpoint, resolve_endpoint
from rolesanywhere_hsm.errors import ArnError, EndpointError

ANCHOR = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/0c3a9e57-5b3f-4d8a-9f0e-3f3f6a1b2c3d"
PROFILE = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/9a8b7c6d-1111-2222-3333-444455556666"
ROLE = "arn:aws:iam::111122223333:role/team/Workload"


def test_valid_arns_give_the_anchor_region_and_partition() -> None:
    arns = validate_session_arns(ANCHOR, PROFILE, ROLE)
    assert (arns.region, arns.partition) == ("eu-west-1", "aws")
    assert str(arns.role) == ROLE


@pytest.mark.parametrize(
    ("anchor", "profile", "role", "message"),
    [
        ("nope", PROFILE, ROLE, "is not an ARN"),
        (PROFILE, PROFILE, ROLE, "does not name a trust-anchor"),
        (ANCHOR, ANCHOR, ROLE, "does not name a profile"),
        (ANCHOR, PROFILE, "arn:aws:iam::111122223333:user/bob", "not an IAM role ARN"),
        (ANCHOR, PROFILE.replace("eu-west-1", "us-east-1"), ROLE, "same partition, region and account"),
        (ANCHOR, PROFILE.replace("111122223333", "999988887777"), ROLE, "same partition, region and account"),
        (ANCHOR, PROFILE, ROLE.replace("arn:aws:", "arn:aws-cn:"), "partition"),
        (ANCHOR.replace(":rolesanywhere:", ":iam:"), PROFILE, ROLE, "not a rolesanywhere one"),
    ],
)
def test_bad_arns_are_refused_with_a_reason(anchor: str, profile: str, role: str, message: str) -> None:
    with pytest.raises(ArnError, match=message) as info:
        validate_session_arns(anchor, profile, role)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("region", "fips", "dualstack", "url"),
    [
        ("us-east-1", False, False, "https://rolesanywhere.us-east-1.amazonaws.com"),
        ("cn-north-1", False, False, "https://rolesanywhere.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", False, False, "https://rolesanywhere.us-gov-west-1.amazonaws.com"),
        ("us-east-2", True, False, "https://rolesanywhere-fips.us-east-2.amazonaws.com"),
        ("eu-west-1", False, True, "https://rolesanywhere.eu-west-1.api.aws"),
        ("cn-northwest-1", False, True, "https://rolesanywhere.cn-northwest-1.api.amazonwebservices.com.cn"),
    ],
)
def test_default_endpoints_per_partition(region: str, fips: bool, dualstack: bool, url: str) -> None:
    assert default_endpoint(region, fips=fips, dualstack=dualstack) == url


def test_fips_outside_its_regions_is_an_error() -> None:
    with pytest.raises(EndpointError, match="no FIPS endpoint in eu-west-1"):
        resolve_endpoint("eu-west-1", environ={"AWS_USE_FIPS_ENDPOINT": "true"})


def test_override_order_flag_then_service_variable_then_global() -> None:
    env = {"AWS_ENDPOINT_URL_ROLESANYWHERE": "https://ra.example", "AWS_ENDPOINT_URL": "https://all.example"}
    assert resolve_endpoint("us-east-1", "https://flag.example/", env) == "https://flag.example"
    assert resolve_endpoint("us-east-1", None, env) == "https://ra.example"
    assert resolve_endpoint("us-east-1", None, {"AWS_ENDPOINT_URL": "https://all.example"}) == "https://all.example"
    assert resolve_endpoint("us-east-1", None, {}) == "https://rolesanywhere.us-east-1.amazonaws.com"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8443", "http://localhost:1", "http://[::1]:9"])
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    assert resolve_endpoint("us-east-1", url, {}) == url


@pytest.mark.parametrize("url", ["http://example.com", "ftp://127.0.0.1", "not a url"])
def test_plain_http_elsewhere_and_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(EndpointError):
        resolve_endpoint("us-east-1", url, {})
