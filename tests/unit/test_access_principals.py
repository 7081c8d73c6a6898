"""Who is who: caller ARNs as IAM principals, Security Engineer matching, self-approval identity."""

from __future__ import annotations

import pytest
from modelshield.access import matches_any, normalize_principal, person_of, same_person, same_principal

SE = "arn:aws:iam::*:role/ModelShieldSecurityEngineer"


@pytest.mark.parametrize(
    ("caller", "principal"),
    [
        # an assumed-role session is its role, whatever the session name
        (
            "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc",
            "arn:aws:iam::123456789012:role/InferenceService",
        ),
        # IAM users and roles are themselves
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
        ("arn:aws:iam::123456789012:role/path/Svc", "arn:aws:iam::123456789012:role/path/Svc"),
        # other partitions keep their partition
        ("arn:aws-cn:sts::123456789012:assumed-role/R/s", "arn:aws-cn:iam::123456789012:role/R"),
        # moto's caller identity form
        ("arn:aws:sts::123456789012:user/moto", "arn:aws:iam::123456789012:user/moto"),
        # anything unrecognised is compared verbatim (trimmed), never guessed at
        ("  not-an-arn ", "not-an-arn"),
    ],
)
def test_normalize_principal(caller: str, principal: str) -> None:
    assert normalize_principal(caller) == principal


def test_two_sessions_of_one_role_are_one_principal_but_two_roles_are_not() -> None:
    a = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
    b = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/bob"
    c = "arn:aws:sts::123456789012:assumed-role/OtherRole/alice"
    assert same_principal(a, b)
    assert not same_principal(a, c)
    assert not same_principal(a, "arn:aws:sts::999999999999:assumed-role/ModelShieldSecurityEngineer/alice")


def test_security_engineer_patterns_match_sessions_roles_and_lists() -> None:
    session = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
    assert matches_any(session, SE)  # through the normalised role
    assert matches_any(session, "arn:aws:sts::*:assumed-role/ModelShieldSecurityEngineer/*")  # as presented
    assert matches_any("arn:aws:iam::1:user/carol", f"{SE}, arn:aws:iam::1:user/carol")
    assert not matches_any("arn:aws:sts::1:assumed-role/ModelShieldSecurityEngineerX/a", SE)
    assert not matches_any("arn:aws:sts::1:assumed-role/Consumer/ModelShieldSecurityEngineer", SE)
    assert not matches_any(session, "")


def test_one_person_under_two_roles_is_recognised_where_iam_names_the_person() -> None:
    consumer = "arn:aws:sts::123456789012:assumed-role/InferenceService/Alice"
    engineer = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
    # Given two roles, one session name (what Identity Center sets to the user): the same person
    assert not same_principal(consumer, engineer) and same_person(consumer, engineer)
    assert person_of(engineer) == "alice"
    # An IAM user and a session of that name are the same person too (refusing is the safe side)
    assert same_person("arn:aws:iam::123456789012:user/alice", engineer)
    # Different names, or no name IAM can tell (a role ARN, anything unparsed): not the same person
    assert not same_person(consumer, "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/bob")
    assert person_of("arn:aws:iam::123456789012:role/R") is None
    assert not same_person("not-an-arn", "not-an-arn")
