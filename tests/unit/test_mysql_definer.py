"""`privileges = "skip"`: the DEFINER clause leaves a view's, routine's, trigger's or event's
CREATE, whatever way the account is written, and a DEFINER in a body or a string stays."""

from __future__ import annotations

import pytest

from davit.adapters.mysql.definer import without_definer
from davit.domain.errors import PermanentError

CASES = {
    "view as SHOW CREATE writes it": (
        "CREATE ALGORITHM=UNDEFINED DEFINER=`app`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1",
        "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1",
    ),
    "backquote doubled in the name": (
        "CREATE DEFINER=`a``b`@`h` FUNCTION f() RETURNS int RETURN 1",
        "CREATE FUNCTION f() RETURNS int RETURN 1",
    ),
    "quoted strings and spaces": (
        "CREATE  DEFINER = 'u\\'x'@'10.0.0.%'  TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1",
        "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1",
    ),
    "bare names": ("CREATE OR REPLACE DEFINER=u@localhost VIEW v AS SELECT 1", "CREATE OR REPLACE VIEW v AS SELECT 1"),
    "CURRENT_USER()": (
        "CREATE DEFINER=CURRENT_USER() EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1",
        "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1",
    ),
    "CURRENT_USER": ("CREATE DEFINER=CURRENT_USER PROCEDURE p() SELECT 1", "CREATE PROCEDURE p() SELECT 1"),
    "a role": (
        "CREATE DEFINER=`reader` AGGREGATE FUNCTION f(x INT) RETURNS INT BEGIN END",
        "CREATE AGGREGATE FUNCTION f(x INT) RETURNS INT BEGIN END",
    ),
    "none": ("CREATE FUNCTION f() RETURNS int RETURN 1", "CREATE FUNCTION f() RETURNS int RETURN 1"),
    "DEFINER in the body stays": (
        "CREATE PROCEDURE p() SELECT 'DEFINER=`x`@`y`'",
        "CREATE PROCEDURE p() SELECT 'DEFINER=`x`@`y`'",
    ),
    "not a CREATE": ("ALTER DEFINER=`u`@`h` VIEW v AS SELECT 1", "ALTER DEFINER=`u`@`h` VIEW v AS SELECT 1"),
}


@pytest.mark.parametrize("create, expected", CASES.values(), ids=CASES.keys())
def test_the_definer_clause_is_left_out(create: str, expected: str) -> None:
    assert without_definer(create) == expected


def test_a_head_with_an_unterminated_name_is_refused_naming_it() -> None:
    with pytest.raises(PermanentError, match="unterminated"):
        without_definer("CREATE DEFINER=`u@h VIEW v AS SELECT 1")
