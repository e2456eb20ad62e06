"""radios/emulate/fault_options.py: one reader for both emulators' --fault strings (issue 17)."""

from __future__ import annotations

import pytest

from radios.emulate.fault_options import FaultOption, FaultSpecError, parse_fault_options

KNOWN = {"fail-deliveries": 0, "reset-after-frames": 1}


def test_options_come_as_a_list_or_joined_with_commas_in_order() -> None:
    parsed = parse_fault_options(["fail-deliveries=3:APS_NO_ACK", " RESET-after-frames=0x10 , "], known=KNOWN,
                                 with_detail=frozenset({"fail-deliveries"}))
    assert parsed == [
        FaultOption("fail-deliveries", 3, "APS_NO_ACK", "fail-deliveries=3:APS_NO_ACK"),
        FaultOption("reset-after-frames", 16, None, "RESET-after-frames=0x10"),
    ]
    assert parse_fault_options(None, known=KNOWN) == [] and parse_fault_options("", known=KNOWN) == []


@pytest.mark.parametrize(("text", "message"), [
    ("fail-deliveries", "fault option 'fail-deliveries': expected NAME=N"),
    ("explode=1", "fault option 'explode=1': unknown fault 'explode' (known: fail-deliveries, reset-after-frames)"),
    ("fail-deliveries=x", "fault option 'fail-deliveries=x': 'x' is not a number"),
    ("reset-after-frames=0", "fault option 'reset-after-frames=0': N must be >= 1, got 0"),
    ("reset-after-frames=2:soon", "fault option 'reset-after-frames=2:soon': reset-after-frames takes no ':' detail"),
])
def test_a_bad_option_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError) as err:
        parse_fault_options(["fail-deliveries=1", text], known=KNOWN, with_detail=frozenset({"fail-deliveries"}))
    assert str(err.value) == message


def test_both_emulators_read_the_same_form() -> None:
    from radios.emulate.ezsp import Faults as EzspFaults
    from radios.emulate.znp import Faults as ZnpFaults

    ezsp = EzspFaults.parse("fail-deliveries=2,drop-after-frames=0x10")
    znp = ZnpFaults.parse("fail-deliveries=2,drop-after-frames=0x10")
    assert ezsp.fail_deliveries == znp.fail_deliveries == 2
    assert "drop-at-frame=16" in repr(ezsp) and znp.drop_after_frames == 16
    for faults in (EzspFaults, ZnpFaults):
        with pytest.raises(FaultSpecError, match="unknown fault 'explode'"):
            faults.parse("explode=1")
    with pytest.raises(FaultSpecError, match="takes no ':' detail"):
        EzspFaults.parse("fail-deliveries=2:APS_NO_ACK")  # the EZSP emulator has one failure status
    with pytest.raises(FaultSpecError, match="status 'NOPE'"):
        ZnpFaults.parse("fail-deliveries=2:NOPE")
