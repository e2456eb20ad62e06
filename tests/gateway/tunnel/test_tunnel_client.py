"""The sans-I/O tunnel client, without asyncio: every response status, every error,
timers as arguments."""

from __future__ import annotations

import pytest

from gateway.tunnel import client as tc
from gateway.tunnel import frames as tf

S = tc.TunnelState
DD = b"\xdd" + bytes(range(20))


def sends(actions: list[tc.Action]) -> list[tc.SendFrame]:
    return [a for a in actions if isinstance(a, tc.SendFrame)]


def of(kind: type, actions: list[tc.Action]) -> list:
    return [a for a in actions if isinstance(a, kind)]


def response(client: tc.TunnelClient, actions: list[tc.Action], status: int, now: float, tunnel_id: int = 0x21, max_in: int = 1500) -> list[tc.Action]:
    request = sends(actions)[-1]
    assert isinstance(request.frame, tf.RequestTunnel)
    payload = tf.RequestTunnelResponse(tunnel_id, status, max_in).to_bytes()
    return client.handle(tc.FrameReceived(request.tsn, 0x00, payload, wants_default_response=False), now)


def opened(now: float = 0.0, **config: object) -> tuple[tc.TunnelClient, list[tc.Action]]:
    client = tc.TunnelClient(tc.TunnelConfig(**config), tsn=10)  # type: ignore[arg-type]
    actions = response(client, client.open(now), 0, now)
    assert client.state is S.OPEN
    return client, actions


def ack(client: tc.TunnelClient, frame: tc.SendFrame, now: float, status: int = 0) -> list[tc.Action]:
    return client.handle(tc.DefaultResponseReceived(frame.tsn, frame.command_id, status), now)


def test_open_sends_the_gbcs_request_and_no_default_response_is_asked() -> None:
    client = tc.TunnelClient(tsn=5)
    actions = client.open(100.0)
    assert of(tc.StateChanged, actions) == [tc.StateChanged(S.IDLE, S.OPENING, "device registered")]
    (request,) = sends(actions)
    assert (request.tsn, request.command_id, request.frame.to_bytes().hex(), request.default_response) == (5, 0, "06ffff00dc05", False)
    assert client.get_timer() == 110.0
    assert client.open(101.0) == []  # already opening


def test_success_opens_and_sends_queued_messages_one_at_a_time() -> None:
    client = tc.TunnelClient(tsn=0)
    t1, early = client.send(DD, 0.0)
    t2, _ = client.send(DD + b"2", 0.0)
    assert sends(early) == []  # not open yet
    actions = response(client, client.open(0.0), 0, 1.0, tunnel_id=0x4321)
    assert client.tunnel_id == 0x4321
    (first,) = sends(actions)
    assert first.frame == tf.TransferData(0x4321, DD) and first.default_response
    done = ack(client, first, 2.0)
    assert of(tc.MessageSent, done) == [tc.MessageSent(t1, DD)]
    (second,) = sends(done)
    assert second.frame == tf.TransferData(0x4321, DD + b"2")
    assert of(tc.MessageSent, ack(client, second, 3.0)) == [tc.MessageSent(t2, DD + b"2")]
    assert client.queued == 0 and client.get_timer() is None


def test_busy_retries_after_180_seconds() -> None:
    client = tc.TunnelClient()
    actions = response(client, client.open(0.0), tf.TunnelStatus.BUSY, 1.0)
    assert client.state is S.RETRY_WAIT and client.reason == "the device is busy"
    assert client.get_timer() == 181.0
    assert client.handle_timer(180.9) == []
    again = client.handle_timer(181.0)
    assert client.state is S.OPENING and isinstance(sends(again)[0].frame, tf.RequestTunnel)
    assert of(tc.StateChanged, actions)[-1].new is S.RETRY_WAIT


def test_no_more_tunnel_ids_retries_after_5_seconds() -> None:
    client = tc.TunnelClient()
    actions = response(client, client.open(0.0), tf.TunnelStatus.NO_MORE_TUNNEL_IDS, 1.0)
    assert sends(actions) == []  # no tunnel of ours to close
    assert client.state is S.RETRY_WAIT and client.get_timer() == 6.0
    assert client.state is S.RETRY_WAIT
    response(client, client.handle_timer(6.0), 0, 6.5)
    assert client.state is S.OPEN


def test_no_more_tunnel_ids_after_a_reset_closes_the_tunnel_we_held() -> None:
    client, _ = opened()
    held = client.tunnel_id
    reopen = client.reset(5.0, "radio reconnected")
    refused = response(client, reopen, tf.TunnelStatus.NO_MORE_TUNNEL_IDS, 6.0)
    (close,) = sends(refused)
    assert close.frame == tf.CloseTunnel(held) and not close.default_response
    assert client.get_timer() == 11.0


@pytest.mark.parametrize(
    ("status", "name"),
    [(tf.TunnelStatus.PROTOCOL_NOT_SUPPORTED, "PROTOCOL_NOT_SUPPORTED"), (tf.TunnelStatus.FLOW_CONTROL_NOT_SUPPORTED, "FLOW_CONTROL_NOT_SUPPORTED"), (9, "status 0x09")],
)
def test_refusals_fail_the_tunnel_and_its_messages(status: int, name: str) -> None:
    client = tc.TunnelClient()
    ticket, _ = client.send(DD, 0.0)
    actions = response(client, client.open(0.0), status, 1.0)
    assert client.state is S.FAILED and client.reason == f"the device refused the tunnel: {name}"
    assert of(tc.MessageFailed, actions) == [tc.MessageFailed(ticket, DD, f"tunnel failed: the device refused the tunnel: {name}")]
    later, refused = client.send(DD, 2.0)
    assert of(tc.MessageFailed, refused)[0].reason.startswith("tunnel failed: ")
    assert client.get_timer() is None


def test_no_response_asks_again_after_open_retry() -> None:
    client = tc.TunnelClient(tc.TunnelConfig(response_timeout=10, open_retry=30))
    client.open(0.0)
    assert client.handle_timer(10.0) == [tc.StateChanged(S.OPENING, S.RETRY_WAIT, "no RequestTunnelResponse")]
    assert client.get_timer() == 40.0
    assert isinstance(sends(client.handle_timer(40.0))[0].frame, tf.RequestTunnel)


def test_undelivered_request_asks_again_after_open_retry() -> None:
    client = tc.TunnelClient()
    (request,) = sends(client.open(0.0))
    actions = client.handle(tc.SendFailed(request.tsn, "no ack"), 1.0)
    assert client.state is S.RETRY_WAIT and client.reason == "RequestTunnel not delivered: no ack"
    assert client.get_timer() == 31.0 and of(tc.StateChanged, actions)


def test_a_response_to_no_request_of_ours_is_ignored() -> None:
    client = tc.TunnelClient(tsn=3)
    client.open(0.0)
    payload = tf.RequestTunnelResponse(1, 0).to_bytes()
    actions = client.handle(tc.FrameReceived(99, 0x00, payload, False), 1.0)
    assert client.state is S.OPENING and isinstance(actions[0], tc.Note)


def test_default_response_failure_to_request_tunnel_fails() -> None:
    client = tc.TunnelClient()
    (request,) = sends(client.open(0.0))
    client.handle(tc.DefaultResponseReceived(request.tsn, 0x00, 0x81), 1.0)  # UNSUP_CLUSTER_COMMAND
    assert client.state is S.FAILED and "status 0x81" in str(client.reason)


def test_no_such_tunnel_reopens_and_resends_the_message() -> None:
    client, actions = opened()
    ticket, queued = client.send(DD, 1.0)
    (first,) = sends(queued)
    error = tf.TransferDataError(client.tunnel_id, tf.TransferDataStatus.NO_SUCH_TUNNEL).to_bytes()
    reopen = client.handle(tc.FrameReceived(50, 0x02, error, False), 2.0)
    assert client.state is S.OPENING and client.reason == "the device knows no such tunnel"
    resent = response(client, reopen, 0, 3.0, tunnel_id=0x22)
    (again,) = sends(resent)
    assert again.frame == tf.TransferData(0x22, DD) and again.tsn != first.tsn
    assert of(tc.MessageSent, ack(client, again, 4.0)) == [tc.MessageSent(ticket, DD)]


@pytest.mark.parametrize(("status", "name"), [(1, "WRONG_DEVICE"), (2, "DATA_OVERFLOW"), (7, "status 0x07")])
def test_other_transfer_data_errors_fail_the_message(status: int, name: str) -> None:
    client, _ = opened()
    ticket, _ = client.send(DD, 1.0)
    client.send(DD + b"next", 1.0)
    error = tf.TransferDataError(client.tunnel_id, status).to_bytes()
    actions = client.handle(tc.FrameReceived(50, 0x02, error, False), 2.0)
    assert of(tc.MessageFailed, actions) == [tc.MessageFailed(ticket, DD, f"the device answered TransferDataError {name}")]
    assert sends(actions)[0].frame.data == DD + b"next"  # type: ignore[union-attr]
    assert client.state is S.OPEN


def test_transfer_data_error_for_another_tunnel_is_ignored() -> None:
    client, _ = opened()
    client.send(DD, 1.0)
    error = tf.TransferDataError(0x999, 0).to_bytes()
    actions = client.handle(tc.FrameReceived(50, 0x02, error, False), 2.0)
    assert client.state is S.OPEN and isinstance(actions[0], tc.Note)


def test_default_response_failure_fails_the_message() -> None:
    client, _ = opened()
    ticket, queued = client.send(DD, 1.0)
    actions = ack(client, sends(queued)[0], 2.0, status=0x89)
    assert of(tc.MessageFailed, actions)[0].reason == "the device answered TransferData with Default Response status 0x89"


def test_unanswered_transfer_data_is_sent_max_attempts_times_then_fails() -> None:
    client, _ = opened(response_timeout=10.0, max_attempts=3)
    ticket, queued = client.send(DD, 0.0)
    tsns = [sends(queued)[0].tsn]
    for n in (10.0, 20.0):
        assert client.get_timer() == n
        tsns.append(sends(client.handle_timer(n))[0].tsn)
    assert len(set(tsns)) == 3
    final = client.handle_timer(30.0)
    assert of(tc.MessageFailed, final) == [tc.MessageFailed(ticket, DD, "no Default Response to TransferData (3 attempts)")]
    # A late Default Response to the first send changes nothing.
    assert client.handle(tc.DefaultResponseReceived(tsns[0], 0x02, 0), 31.0) == []


def test_undelivered_transfer_data_is_sent_again_after_resend_delay() -> None:
    client, _ = opened(resend_delay=2.0, max_attempts=2)
    ticket, queued = client.send(DD, 0.0)
    (first,) = sends(queued)
    client.handle(tc.SendFailed(first.tsn, "no ack"), 1.0)
    assert client.get_timer() == 3.0
    (second,) = sends(client.handle_timer(3.0))
    failed = client.handle(tc.SendFailed(second.tsn, "no ack"), 4.0)
    assert of(tc.MessageFailed, failed) == [tc.MessageFailed(ticket, DD, "not delivered: no ack (2 attempts)")]


def test_a_message_above_the_devices_maximum_fails_unsent() -> None:
    client, _ = opened()
    client.peer_max = 100
    ticket, actions = client.send(bytes(101), 0.0)
    assert sends(actions) == []
    assert of(tc.MessageFailed, actions)[0].reason == "101 bytes, above the device's maximum incoming transfer size 100"


def test_received_data_is_handed_up_and_acknowledged() -> None:
    client, _ = opened()
    payload = tf.TransferData(client.tunnel_id, DD).to_bytes()  # type: ignore[arg-type]
    actions = client.handle(tc.FrameReceived(77, 0x01, payload), 1.0)
    assert actions == [tc.MessageReceived(DD), tc.SendDefaultResponse(77, 0x01, 0)]
    quiet = client.handle(tc.FrameReceived(78, 0x01, payload, wants_default_response=False), 1.0)
    assert quiet == [tc.MessageReceived(DD)]


def test_received_data_on_another_tunnel_gets_no_such_tunnel() -> None:
    client, _ = opened()
    actions = client.handle(tc.FrameReceived(77, 0x01, tf.TransferData(0x0999, DD).to_bytes()), 1.0)
    (error,) = sends(actions)
    assert error.frame == tf.TransferDataError(0x0999, tf.TransferDataStatus.NO_SUCH_TUNNEL)
    assert error.command_id == 0x03 and not of(tc.MessageReceived, actions)


def test_received_data_before_the_tunnel_opens_gets_no_such_tunnel() -> None:
    client = tc.TunnelClient()
    client.open(0.0)
    actions = client.handle(tc.FrameReceived(77, 0x01, tf.TransferData(1, DD).to_bytes()), 1.0)
    assert sends(actions)[0].frame == tf.TransferDataError(1, 0)


def test_received_data_above_our_maximum_gets_data_overflow() -> None:
    client, _ = opened()
    actions = client.handle(tc.FrameReceived(77, 0x01, tf.TransferData(client.tunnel_id, bytes(1501)).to_bytes()), 1.0)  # type: ignore[arg-type]
    assert sends(actions)[0].frame == tf.TransferDataError(client.tunnel_id, tf.TransferDataStatus.DATA_OVERFLOW)  # type: ignore[arg-type]
    assert not of(tc.MessageReceived, actions)


def test_a_malformed_frame_gets_malformed_command() -> None:
    client, _ = opened()
    actions = client.handle(tc.FrameReceived(5, 0x01, b"\x01"), 1.0)
    assert actions[0] == tc.Note("refused a frame from the device: TransferData: tunnel_id at offset 0: truncated: needs 2 bytes, 1 left")
    assert actions[1] == tc.SendDefaultResponse(5, 0x01, 0x80)


def test_closure_notification_reopens_and_resends() -> None:
    client, _ = opened()
    ticket, queued = client.send(DD, 0.0)
    actions = client.handle(tc.FrameReceived(9, 0x06, tf.TunnelClosureNotification(client.tunnel_id).to_bytes(), False), 1.0)  # type: ignore[arg-type]
    assert client.state is S.OPENING and client.reason == "the device closed the tunnel"
    refused = response(client, actions, tf.TunnelStatus.NO_MORE_TUNNEL_IDS, 2.0)
    assert sends(refused) == []  # the device closed it itself: nothing stale to close
    resent = response(client, client.handle_timer(7.0), 0, 7.5, tunnel_id=5)
    assert sends(resent)[0].frame == tf.TransferData(5, DD)


def test_close_sends_close_tunnel_and_fails_what_is_queued() -> None:
    client, _ = opened()
    tunnel = client.tunnel_id
    ticket, _ = client.send(DD, 0.0)
    actions = client.close(1.0)
    (close,) = sends(actions)
    assert close.frame == tf.CloseTunnel(tunnel) and not close.default_response  # type: ignore[arg-type]
    assert of(tc.MessageFailed, actions) == [tc.MessageFailed(ticket, DD, "tunnel closed")]
    assert client.state is S.CLOSED and client.close(2.0) == []
    assert of(tc.MessageFailed, client.send(DD, 3.0)[1])[0].reason == "tunnel closed"
    assert client.reset(4.0, "radio") == []  # closed stays closed
    assert isinstance(sends(client.open(5.0))[0].frame, tf.RequestTunnel)  # a restart opens again


def test_close_before_open_sends_nothing() -> None:
    client = tc.TunnelClient()
    client.open(0.0)
    assert sends(client.close(1.0)) == []


def test_reset_reopens_and_resends_the_message_in_flight() -> None:
    client, _ = opened()
    ticket, queued = client.send(DD, 0.0)
    actions = client.reset(1.0, "radio reconnected")
    assert client.state is S.OPENING and client.tunnel_id is None and client.reason == "radio reconnected"
    assert client.queued == 1
    resent = response(client, actions, 0, 2.0, tunnel_id=0x21)
    assert sends(resent)[0].frame == tf.TransferData(0x21, DD)


def test_reset_before_open_does_nothing_and_after_failure_tries_again() -> None:
    assert tc.TunnelClient().reset(0.0, "radio") == []
    client = tc.TunnelClient()
    response(client, client.open(0.0), tf.TunnelStatus.PROTOCOL_NOT_SUPPORTED, 1.0)
    assert isinstance(sends(client.reset(2.0, "radio reconnected"))[0].frame, tf.RequestTunnel)


def test_tsns_wrap() -> None:
    client = tc.TunnelClient(tsn=0xFF)
    (request,) = sends(client.open(0.0))
    assert request.tsn == 0xFF and client.tsn == 0


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_every_move_outside_the_table_is_refused(old: tc.TunnelState, new: tc.TunnelState) -> None:
    client = tc.TunnelClient(state=old)
    if new in tc.TRANSITIONS[old]:
        assert client._set_state(new, "test") == [tc.StateChanged(old, new, "test")]
    else:
        with pytest.raises(tc.TunnelUsageError, match=f"{old.value} -> {new.value}"):
            client._set_state(new, "test")
        assert client.state is old


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts=0"):
        tc.TunnelConfig(max_attempts=0)
    with pytest.raises(ValueError, match="busy_retry"):
        tc.TunnelConfig(busy_retry=-1)


def test_abandon_fails_the_queue_and_keeps_the_state() -> None:
    client = tc.TunnelClient()
    ticket, _ = client.send(DD, 0.0)
    assert client.abandon("no Tunneling server") == [tc.MessageFailed(ticket, DD, "no Tunneling server")]
    assert client.state is S.IDLE and client.queued == 0
