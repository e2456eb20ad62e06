"""``han-ota run``: the long-running gateway. Wiring only; the protocol lives in gateway/.

One process holds one radio, ONE ``gateway.engine.Engine`` (the same engine the
one-shot push uses), the activation service, the state store and the audit log,
and answers the control API (``han_ota.control``) on a Unix socket.

Start-up order, and why:

1. state directory, store, audit log, trust anchors: refuse to start (exit 1, with
   the path and the fix) rather than run without durable state. The audit chain is
   verified against the head the store noted (``gateway.integrity``): a broken or cut
   log refuses the start (the fix is ``han-ota log --seal``); a store that lost its
   state gets its anti-replay counters back from the log, with a warning;
2. the control socket, then ``READY=1``: ``han-ota status`` works (and says "radio
   down") even while a dongle takes tens of seconds to come up, or is unplugged;
3. the radio, in the background, retried with backoff 1, 2, 4 ... 60 s; on the
   first success the engine is made and every active job in the store is resumed.

Durability: every state change is written to the store (one fsynced transaction)
as it happens; progress and the session snapshot at most every ``progress_bytes``
or ``progress_seconds``, and on stop. A restart therefore resumes each transfer at
or before the device's offset (the device asks for the block it needs; the session
serves any offset). Every note, state change and interesting frame goes to the
hash-chained audit log. A failing write (a full disk) is logged, shown in
``status``, retried on the next tick, and never drops a job already accepted; a
push whose job cannot be written is refused, so nothing is acknowledged that is
not on disk.

Radio loss: ``radios.supervisor.RadioSupervisor`` notices it (zigpy's
``connection_lost``, or a Z-Stack reset) and reopens the radio with backoff; before
it closes the dead application the engine parks the jobs (``Engine.park``: timers
frozen, so no stall timer runs out while the dongle is away); on the new application
the engine is rebound and the jobs resumed without a new Image Notify
(``Engine.resume_parked``). A transfer that then stays silent gets one (the session's
nudges, audited as ``job.nudge``).

The package, by responsibility (composition: ``Daemon`` owns the parts and hands each
what it needs):

- ``lifecycle``: ``Daemon`` (start, stop, the radio up, lost and back) and ``run_daemon``;
- ``runtime``: what the parts share (config, radio state, engine, activation service);
- ``journal``: the store and the audit log, and every observed job action written to them;
- ``recovery``: the jobs in the store resumed after a restart;
- ``status``: the status and devices views (and the systemd status line);
- ``handlers``: the control API's request handlers (``han_ota.control`` routes to them);
- ``images``: the kept copies of pushed images.
"""

from han_ota.daemon.images import IMAGES_DIR
from han_ota.daemon.lifecycle import BACKOFF_S, Daemon, rebind_engine, run_daemon
from han_ota.daemon.recovery import restore_job
from han_ota.daemon.runtime import DaemonStartError, RadioState, sim_specs, version

__all__ = ["BACKOFF_S", "IMAGES_DIR", "Daemon", "DaemonStartError", "RadioState", "rebind_engine", "restore_job", "run_daemon", "sim_specs", "version"]
