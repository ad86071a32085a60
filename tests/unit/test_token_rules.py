"""Bearer token rules (infra.tokens, api.auth.verify): which tokens are refused, and that
each refusal is a 401 saying what is wrong in the caller's terms, from a small fixed set,
never in the decoder's words."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from api.auth import verify
from api.problems import Problem
from infra.config import Settings
from infra.tokens import (
    BAD_SIGNATURE,
    BAD_SUB,
    DEFAULT_MAX_TTL_S,
    EXPIRED,
    LEEWAY_S,
    MALFORMED,
    NOT_YET_VALID,
    UNKNOWN_ROLE,
    TokenRefused,
    issue_token,
    missing_claim,
    not_a_number,
    read_token,
    too_long,
)

SECRET = "s" * 32
NOW = 1_750_000_000
DAY = 86400
YEAR_9999 = 253402300799  # 9999-12-31T23:59:59Z


def signed(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token signed with ``secret``; ``claims`` change the good defaults (None drops
    a claim)."""
    base: dict[str, Any] = {"sub": "ann", "role": "rider", "iat": NOW, "exp": NOW + 600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret,
                      algorithm=algorithm)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def refusal(token: str, max_ttl_s: int = DAY) -> str:
    with pytest.raises(TokenRefused) as refused:
        read_token(token, SECRET, max_ttl_s, now=NOW)
    return str(refused.value)


def test_a_good_token_names_its_caller() -> None:
    assert read_token(signed(), SECRET, DAY, now=NOW) == ("ann", "rider")
    assert read_token(signed(role="admin", sub="ops|1"), SECRET, DAY, now=NOW) == \
        ("ops|1", "admin")


def test_a_lifetime_of_exactly_the_maximum_is_accepted() -> None:
    """What the bench, the simulator and the tests' clients sign: a day from now."""
    assert read_token(signed(exp=NOW + DAY), SECRET, DAY, now=NOW) == ("ann", "rider")
    # signed a little earlier, the day still fits
    assert read_token(signed(iat=NOW - 30, exp=NOW - 30 + DAY), SECRET, DAY, now=NOW)
    # and a token freshly issued by ridehail's own signer, with the default maximum
    assert read_token(issue_token(SECRET, "driver", "bob", DEFAULT_MAX_TTL_S), SECRET)


@pytest.mark.parametrize(("claims", "detail"), [
    ({"exp": YEAR_9999}, too_long(DAY)),
    ({"iat": YEAR_9999 - 600, "exp": YEAR_9999}, NOT_YET_VALID),
    ({"exp": NOW + DAY + 1}, too_long(DAY)),  # one second more than a day from its iat
    ({"iat": NOW - DAY, "exp": NOW + DAY}, too_long(DAY)),
    # iat a little ahead (another machine's clock): a day from it is within the leeway
    ({"iat": NOW + LEEWAY_S, "exp": NOW + LEEWAY_S + DAY}, None),
    ({"iat": NOW + LEEWAY_S + 1, "exp": NOW + 2 * LEEWAY_S}, NOT_YET_VALID),
    ({"iat": NOW - 10 * DAY, "exp": NOW + 600}, too_long(DAY)),
    ({"nbf": NOW + 600}, NOT_YET_VALID),
    ({"exp": NOW}, EXPIRED),
    ({"iat": NOW - 600, "exp": NOW - 5}, EXPIRED),
    ({"exp": 10**400}, too_long(DAY)),  # an int no float can hold
])
def test_lifetimes(claims: dict[str, Any], detail: str | None) -> None:
    if detail is None:
        assert read_token(signed(**claims), SECRET, DAY, now=NOW) == ("ann", "rider")
    else:
        assert refusal(signed(**claims)) == detail


def test_the_maximum_is_the_setting() -> None:
    assert Settings().jwt_max_ttl_s == DEFAULT_MAX_TTL_S == DAY
    assert refusal(signed(exp=NOW + 3601), max_ttl_s=3600) == too_long(3600)
    assert "3600 seconds" in too_long(3600)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="greater than 0"):
            Settings(jwt_max_ttl_s=bad)


@pytest.mark.parametrize("name", ["sub", "role", "exp"])
def test_each_required_claim(name: str) -> None:
    assert refusal(signed(**{name: None})) == missing_claim(name) == \
        f"The token lacks the claim {name}"


def test_without_an_iat_the_lifetime_is_judged_from_now() -> None:
    # the first contract's tokens carry sub, role and exp only
    assert read_token(signed(iat=None), SECRET, DAY, now=NOW) == ("ann", "rider")
    assert read_token(signed(iat=None, exp=NOW + DAY), SECRET, DAY, now=NOW) == \
        ("ann", "rider")
    assert refusal(signed(iat=None, exp=253402300799)) == too_long(DAY)
    assert refusal(signed(iat=None, exp=NOW + DAY + LEEWAY_S + 1)) == too_long(DAY)


@pytest.mark.parametrize(("claims", "detail"), [
    ({"exp": str(NOW + 600)}, not_a_number("exp")),  # RFC 7519: a JSON number
    ({"iat": "yesterday"}, not_a_number("iat")),
    ({"exp": True}, not_a_number("exp")),
    ({"nbf": "now"}, not_a_number("nbf")),
    ({"role": "superuser"}, UNKNOWN_ROLE),
    ({"role": ["admin"]}, UNKNOWN_ROLE),
    ({"sub": "a.b *"}, BAD_SUB),
    ({"sub": ""}, BAD_SUB),
    ({"sub": 7}, BAD_SUB),
])
def test_claims_of_the_wrong_kind(claims: dict[str, Any], detail: str) -> None:
    assert refusal(signed(**claims)) == detail


def test_non_finite_numbers_are_not_numeric_dates() -> None:
    for value in (b"Infinity", b"NaN", b"-Infinity"):
        payload = b'{"sub":"ann","role":"rider","iat":1750000000,"exp":' + value + b"}"
        assert refusal(jwt.PyJWS().encode(payload, SECRET)) == not_a_number("exp")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 one
def test_signatures() -> None:
    good = signed()
    header, _, signature = good.split(".")
    forged = ".".join([header, b64(json.dumps({"sub": "ann", "role": "admin", "iat": NOW,
                                               "exp": NOW + 600}).encode()), signature])
    alg_none = ".".join([b64(b'{"alg":"none","typ":"JWT"}'),
                         b64(json.dumps({"sub": "ann", "role": "admin", "iat": NOW,
                                         "exp": NOW + 600}).encode()), ""])
    for token in (signed("another-secret-" + "y" * 20), forged, alg_none,
                  signed(algorithm="HS512")):
        assert refusal(token) == BAD_SIGNATURE


@pytest.mark.parametrize("token", [
    "not-a-token",
    "a.b.c",
    "",
    # the bytes that made the decoder say "Invalid header string: 'utf-8' codec can't
    # decode byte 0xb7"
    b64(b"\xb7\xfe\xff") + "." + b64(b"{}") + ".x",
    b64(b"[1, 2]") + "." + b64(b"{}") + ".x",
    b64(b'{"alg":"HS256"}') + ".%%%." + "x",
])
def test_garbage_is_malformed_and_never_the_decoders_words(token: str) -> None:
    assert refusal(token) == MALFORMED


def test_a_signed_payload_that_is_not_an_object_is_malformed() -> None:
    for payload in (b"[1, 2]", b"\xb7\xfe", b"12"):
        assert refusal(jwt.PyJWS().encode(payload, SECRET)) == MALFORMED


def test_verify_answers_401_with_the_refusal_and_www_authenticate() -> None:
    garbage = b64(b"\xb7\xfe\xff") + "." + b64(b"{}") + ".x"
    for token, detail in ((garbage, MALFORMED), (signed(exp=YEAR_9999), too_long(DAY))):
        with pytest.raises(Problem) as answered:
            verify(token, SECRET, DAY)
        problem = answered.value
        assert problem.status == 401 and problem.headers == {"WWW-Authenticate": "Bearer"}
        assert problem.detail == detail
        for internal in ("utf-8", "codec", "0xb7", "Invalid header", "Error"):
            assert internal not in problem.detail
    who = verify(issue_token(SECRET, "driver", "bob"), SECRET, DAY)
    assert (who.sub, who.role) == ("bob", "driver")
