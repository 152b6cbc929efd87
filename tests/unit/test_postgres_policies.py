"""Fitting pg_dump's CREATE POLICY definitions to the roles a restore target has."""

from __future__ import annotations

import pytest

from davit.adapters.postgres.policies import fit_policy

HAS = {"admin", "Odd, TO x"}


@pytest.mark.parametrize(
    ("defn", "fitted", "missing"),
    [
        pytest.param(
            b"CREATE POLICY p ON public.t TO app, admin USING ((a = 1));\n",
            b"CREATE POLICY p ON public.t TO admin USING ((a = 1));\n",
            ["app"],
            id="a-missing-role-is-taken-out-of-the-list",
        ),
        pytest.param(
            b'CREATE POLICY "a TO b" ON "s, t"."x TO y" AS RESTRICTIVE FOR UPDATE TO "Odd, TO x", "gone"", x" USING (true);\n',
            b'CREATE POLICY "a TO b" ON "s, t"."x TO y" AS RESTRICTIVE FOR UPDATE TO "Odd, TO x" USING (true);\n',
            ['gone", x'],
            id="quoted-names-that-read-like-syntax",
        ),
        pytest.param(
            b"CREATE POLICY p ON public.t FOR SELECT TO app WITH CHECK (true);\n",
            None,
            ["app"],
            id="a-policy-naming-no-role-that-exists-is-left-out",
        ),
    ],
)
def test_a_policy_keeps_only_the_roles_the_target_has(defn: bytes, fitted: bytes | None, missing: list[str]) -> None:
    got, change = fit_policy(defn, HAS)
    assert got == fitted
    assert change is not None and change.missing == missing and change.dropped == (fitted is None)


@pytest.mark.parametrize(
    "defn",
    [
        pytest.param(b"CREATE POLICY p ON public.t USING (true);\n", id="public"),
        pytest.param(b"CREATE POLICY p ON public.t TO admin USING (true);\n", id="every-role-exists"),
        pytest.param(b"CREATE POLICY P ON public.t TO app USING (true);\n", id="a-shape-pg_dump-does-not-write"),
    ],
)
def test_a_policy_for_public_or_existing_roles_or_of_another_shape_is_unchanged(defn: bytes) -> None:
    assert fit_policy(defn, HAS) == (defn, None)


@pytest.mark.parametrize(
    ("defn", "fitted"),
    [
        pytest.param(
            b"CREATE POLICY p ON public.t AS RESTRICTIVE TO public, ghost USING (false);\n",
            b"CREATE POLICY p ON public.t AS RESTRICTIVE TO public USING (false);\n",
            id="public-beside-a-missing-role-stays-public",
        ),
        pytest.param(
            b'CREATE POLICY p ON public.t AS RESTRICTIVE TO "public", ghost USING (false);\n',
            b'CREATE POLICY p ON public.t AS RESTRICTIVE TO "public" USING (false);\n',
            id="public-quoted-is-public-too",
        ),
        pytest.param(
            b"CREATE POLICY p ON public.t AS RESTRICTIVE TO current_user, session_user, current_role, ghost USING (false);\n",
            b"CREATE POLICY p ON public.t AS RESTRICTIVE TO current_user, session_user, current_role USING (false);\n",
            id="the-current-user-keywords-name-someone",
        ),
    ],
)
def test_a_crafted_restrictive_policy_for_everyone_is_never_left_out(defn: bytes, fitted: bytes) -> None:
    """A snapshot's archive is written by whoever can write the repository: a RESTRICTIVE policy
    TO PUBLIC (or to the restoring user) beside a missing role must stay, else every role would
    see rows the archive's own SQL hides from them (PostgreSQL reads `TO public, ghost` as PUBLIC)."""
    got, change = fit_policy(defn, HAS)
    assert got == fitted
    assert change is not None and change.missing == ["ghost"] and not change.dropped


@pytest.mark.parametrize(
    "defn",
    [
        pytest.param(b"CREATE POLICY p ON public.t AS RESTRICTIVE TO public USING (false);\n", id="public-alone"),
        pytest.param(b"CREATE POLICY p ON public.t AS RESTRICTIVE TO current_user USING (false);\n", id="current-user-alone"),
        pytest.param(b"CREATE POLICY p ON public.t AS RESTRICTIVE TO ghost,admin USING (false);\n", id="a-list-without-spaces"),
        pytest.param(
            "CREATE POLICY p ON public.t AS RESTRICTIVE TO ghostä, admin USING (false);\n".encode(),
            id="a-bare-name-the-pattern-stops-inside",
        ),
        pytest.param(b"CREATE POLICY p ON public.t AS RESTRICTIVE TO ghost", id="a-list-that-ends-nowhere"),
    ],
)
def test_a_crafted_policy_is_not_cut_short_or_left_out(defn: bytes) -> None:
    """A list whose end is not where pg_dump ends one is not read, so a restrictive policy for an
    existing role is never dropped on the strength of the first name alone."""
    assert fit_policy(defn, HAS) == (defn, None)
