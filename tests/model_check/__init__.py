"""A bounded, exhaustive adversarial explorer ("model check") of the masked-sum protocol.

The adversary is the server. It drives the *real* :class:`SecAggClient` objects (and, for the
teeth, weakened subclasses in :mod:`.mutants`) through complete sessions, building every message
to every client instance itself (:mod:`.adversary`), then asks :mod:`.oracle` what it can compute
from everything it collected. ``python -m tests.model_check`` (``make model-check``) runs the full
profile and ends with ``model-check: N strategies, M schedules, V violations; mutants caught K/K``;
``--short`` runs the subset the test suite runs; ``--findings`` runs the families kept out of the
gate (see below).

**The bounded space** (:mod:`.strategies`). Settings: the complete graph with n = 3, 4, 5 and
every threshold the default ``ClientPolicy`` allows (t > n/2), and SecAgg+ n=5, k=2, t=2. Up to
T colluders: T = 2t - n - 1 for the complete graph (SECURITY.md's T < 2t - n), 0 for SecAgg+ k=2
(2t - k - 1 = 1 colluder in a neighbourhood is already outside the guarantee); by symmetry of the
complete graph the colluders are the highest ids. Colluders hand the server their b_u, mask key
and every share they hold, and sign any U3 under any context. A *schedule* fixes every choice of
the server; *strategies* are families, each enumerated exhaustively over its parameters:

* ``honest``: the honest server, with no dropout or any one client silent from any step;
* ``split-u3``: every victim v and every nonempty class B not holding v: B is shown U3 without v,
  the rest U3 with it; signature lists of the same view from this session, or empty;
* ``partner-exclusion``: every victim v, every partner set P (|P| >= t - 1) from which alone v
  is relayed shares, every nonempty X in P that all other clients are told dropped (per-client
  U3 views); v is shown U3 = {v} + P with signatures from this session, none, or each repeated
  t times (``sigs=dup``), or the others' U3 without X (``v-u3=consistent``: it names members
  that never shared keys with v). ``/reused-id``: the first in two sessions under one session
  id (ledger off), with signature lists drawing on both sessions (replays);
* ``cross-session-mix`` (n=5, t=3): two sessions under one id; the target's key list carries
  its partners' advertisements from the other session, the partners' mask keys are declared
  dropped by instances of both sessions (replayed advertisements, per-instance key lists that
  differ pairwise in U1, relays, U3 and signatures from either session);
* ``ledger-reuse``: a second session under a used id with the ledger on (honest flow); and
  (n=5, t=3) ``ledger-reuse/regroup``: the ``regroup`` schedule with the ledger on and each
  client's input the same in both sessions (a retry that resubmits it; the oracle then runs
  over clients, not instances);
* ``weak-config``: every client is offered a weaker config than the nominal one (t <= n/2 via
  an unchecked SecAggConfig, or num_clients = m < n with a smaller majority), then split views;
* ``regroup/reused-id`` (n=5, t=3): two sessions under one id (ledger off) regrouped into three
  consistent worlds that mix their instances.

Per-client choices outside these families (e.g. arbitrary products of per-client relays and U3
views) are not enumerated: the space is exhaustive per family, not over all server behaviours.

**The oracle** (:mod:`.oracle`): shares are checked against their owners' commitments, secrets
with >= t valid shares are rebuilt and checked; each distinct mask seed (its real bytes) is a
variable, known when its b_u / an endpoint's mask key was rebuilt or an endpoint colludes; the
combinations of collected masked inputs in which all unknown masks cancel (nullspace over
GF(2^61 - 1)) give the functionals of honest inputs (one fresh variable per (session, client)
instance) the server learns.

**Allowed** (:func:`.oracle.allowed`): the ideal functionality, in which each honest instance's
input enters at most one sum over at least t instances: the knowledge must be a combination of
sums over pairwise-disjoint sets S of honest instances with |S| + (colluders) >= t, t the
sessions' nominal threshold (SecAgg+: the per-group t of k + 1). Sets may mix the instances of two
sessions under one id (``regroup``). And no honest instance revealed both shares of one owner.
Any ProtocolViolation is recorded and the instance gets nothing more.

**Mutants** (:mod:`.mutants`, ``MUTANTS``, gated): no session binding (context from the session
id alone); accepts t <= n/2; reveals both shares of a dropped peer; skips the consistency check;
sizes its policy by ``cfg.num_clients`` instead of the group; counts a repeated signature once
per copy; signs a U3 naming group members that never shared keys with it; ignores its session
ledger. The explorer must catch each (and prints the schedule), in both profiles.
``REDUNDANT`` (not counted; run by the short profile, which must find nothing against them):
ignores the digest listed for itself, ignores the advertisements' listed digests, share AEAD
without the context, counts signers outside U3 (or its group), accepts a U3 without itself,
accepts a U3 below t. Each is harmless while the client's other checks stand; its docstring
says why (the explorer prints it as "redundant <name>: <reason>").

**Findings outside the model** (``--findings``): ``regroup`` with each client's input the same in
both runs. The protocol's model gives every session its own input; a client that resubmits one
input to two sessions under one id lets a regrouping server difference the sums (V1 - V2 + V3 =
2 x_2). The real client is safe only through its ``SessionLedger`` (refused in
``ledger-reuse``) and by never resubmitting an input (SECURITY.md, known limitations).
"""
