"""Leaving a table out of a schema restore: the `pg_restore -l` lines that belong to it go (by
catalog oid, or by exact name for the entries without one), names with spaces and quotes too."""

from __future__ import annotations

from davit.adapters.postgres.toc import leave_out

LISTING = """;
; Archive created at 2026-12-06 21:58:31 UTC
6; 2615 16456 SCHEMA - Odd Schema admin
219; 1255 16480 FUNCTION public f() admin
216; 1259 16458 TABLE Odd Schema Mixed "q" t admin
3364; 0 0 COMMENT Odd Schema TABLE "Mixed ""q"" t" admin
3365; 0 0 ACL Odd Schema TABLE "Mixed ""q"" t" admin
215; 1259 16457 SEQUENCE Odd Schema Mixed "q" t_id_seq admin
3366; 0 0 SEQUENCE OWNED BY Odd Schema Mixed "q" t_id_seq admin
218; 1259 16468 TABLE public keep admin
217; 1259 16467 SEQUENCE public keep_id_seq admin
3367; 0 0 SEQUENCE OWNED BY public keep_id_seq admin
3204; 2604 16461 DEFAULT Odd Schema Mixed "q" t id admin
3206; 2604 16471 DEFAULT public keep id admin
3208; 2606 16466 CONSTRAINT Odd Schema Mixed "q" t Mixed "q" t_pkey admin
3211; 2606 16473 CONSTRAINT public keep keep_pkey admin
3209; 1259 16479 INDEX Odd Schema Mixed "q" t_v_idx admin
3213; 2620 16481 TRIGGER Odd Schema Mixed "q" t tr admin
3212; 2606 16474 FK CONSTRAINT public keep keep_o_fkey admin
3356; 0 16458 ROW SECURITY Odd Schema Mixed "q" t admin
3357; 3256 16482 POLICY Odd Schema Mixed "q" t p admin
"""
ODD = ["Odd Schema", 'Mixed "q" t', ["1259:16458", "1259:16457", "2604:16461", "2606:16466", "1259:16479", "2620:16481",
       "2606:16474", "3256:16482"], ['Mixed "q" t_id_seq']]  # fmt: skip


def test_every_entry_of_a_left_out_table_goes_and_the_others_stay() -> None:
    kept, dropped = leave_out(LISTING, [ODD])
    lines = [line for line in kept.splitlines() if line and not line.startswith(";")]
    assert dropped == 12
    assert [line.split(" ", 3)[3] for line in lines] == [
        "SCHEMA - Odd Schema admin",
        "FUNCTION public f() admin",
        "TABLE public keep admin",
        "SEQUENCE public keep_id_seq admin",
        "SEQUENCE OWNED BY public keep_id_seq admin",
        "DEFAULT public keep id admin",
        "CONSTRAINT public keep keep_pkey admin",
    ]


def test_nothing_left_out_keeps_the_listing() -> None:
    kept, dropped = leave_out(LISTING, [])
    assert dropped == 0 and kept == LISTING
