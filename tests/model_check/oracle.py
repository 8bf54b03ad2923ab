"""The knowledge oracle: what the server can compute from everything it collected.

1. **Secrets.** Every share the server holds (from UNMASK messages, parsed leniently: a client may
   label or repeat entries however it likes; and every share a colluder held) is checked, as the
   server would, against the commitment its owner put in its SHARES message for that holder;
   the label is ignored, the commitment decides the kind. A secret with >= t valid shares (t of
   the owner's own config) is rebuilt and checked against its owner's commitment to b_u or its
   advertised mask public key. Colluders' own b_u and mask keys are known outright.
2. **Masks.** Each collected masked input y_u = x_u + PRG(self seed) + sum +-PRG(pairwise seed) is
   a row over variables: u's input (honest instances only; colluders' inputs are known) and one
   variable per distinct mask seed (labelled by its real seed bytes). A self mask is known when
   b_u was rebuilt; a pairwise mask when either endpoint's mask key was rebuilt or either endpoint
   is a colluder.
3. **Knowledge.** The combinations of rows in which every unknown mask cancels (the left nullspace
   over GF(2^61 - 1)) give the linear functionals of honest inputs the server learns.

``analyse`` then asserts (:func:`allowed`) that the knowledge is a combination of sums over
pairwise-disjoint sets of honest instances, each with |S| + (colluders) >= t, t the sessions'
*nominal* (honest) threshold (SecAgg+: the per-group threshold t of k + 1): the ideal
functionality, in which each instance's input enters at most one sum over at least t instances.
Sets may mix instances of two sessions run under one session id (a server that regroups them
into consistent worlds learns one such sum per world, which is allowed while every instance has
its own input). And no honest instance revealed both the self-mask share and the mask-key share
of one owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gptfl_secure.protocols import crypto, derivation, shamir
from gptfl_secure.protocols import messages as m

P = 2**61 - 1
SELF, MASK = "self", "mask"


# ------------------------------------------------------------------ linear algebra
def left_nullspace(rows: list[dict], unknown: set) -> list[list[int]]:
    """Basis of {c : sum_i c_i * rows[i][v] = 0 for every unknown variable v} over GF(P)."""
    cols = sorted(unknown, key=repr)
    n = len(rows)
    # Solve A c = 0 with A[j][i] = rows[i][cols[j]].
    a = [[rows[i].get(v, 0) % P for i in range(n)] for v in cols]
    pivots, r = [], 0
    for col in range(n):
        piv = next((j for j in range(r, len(a)) if a[j][col]), None)
        if piv is None:
            continue
        a[r], a[piv] = a[piv], a[r]
        inv = pow(a[r][col], -1, P)
        a[r] = [x * inv % P for x in a[r]]
        for j in range(len(a)):
            if j != r and a[j][col]:
                f = a[j][col]
                a[j] = [(x - f * y) % P for x, y in zip(a[j], a[r], strict=True)]
        pivots.append(col)
        r += 1
    basis = []
    for free in (c for c in range(n) if c not in pivots):
        vec = [0] * n
        vec[free] = 1
        for j, pc in enumerate(pivots):
            vec[pc] = -a[j][free] % P
        basis.append(vec)
    return basis


def rank(vectors: list[list[int]]) -> tuple[int, list[list[int]]]:
    """Rank over GF(P) and a row-reduced basis."""
    rows = [list(v) for v in vectors if any(v)]
    out = []
    while rows:
        v = rows.pop()
        for b in out:
            lead = next(i for i, x in enumerate(b) if x)
            if v[lead]:
                f = v[lead]
                v = [(x - f * y) % P for x, y in zip(v, b, strict=True)]
        if any(v):
            lead = next(i for i, x in enumerate(v) if x)
            inv = pow(v[lead], -1, P)
            out.append([x * inv % P for x in v])
    return len(out), out


@dataclass
class Row:
    """One collected masked input: its input variable (None: a colluder's, known) and its mask
    variables with coefficients."""

    input: object
    masks: dict = field(default_factory=dict)


def knowledge(rows: list[Row], known: set) -> list[dict]:
    """Functionals {input variable: coefficient} of honest inputs the server can compute."""
    unknown = {v for r in rows for v in r.masks if v not in known}
    out = []
    for c in left_nullspace([r.masks for r in rows], unknown):
        f: dict = {}
        for ci, r in zip(c, rows, strict=True):
            if ci and r.input is not None:
                f[r.input] = (f.get(r.input, 0) + ci) % P
        f = {k: v for k, v in f.items() if v}
        if f:
            out.append(f)
    return out


def allowed(funcs: list[dict], honest: list, colluders: int, t: int) -> str | None:
    """None if what the server learns is allowed; else what is wrong.

    Allowed (the ideal functionality of secure aggregation, one input per instance): every
    functional is a combination of sums over pairwise-disjoint sets of honest instances, each
    set S with |S| + colluders >= t. Equivalently, group the honest instances into classes on
    which every learned functional has equal coefficients (the coarsest sets the knowledge cannot
    tell apart): each class that some functional touches must hold >= t - colluders instances.
    One honest session gives one class (U3 minus the colluders); a server that learns a sum below
    the threshold, an individual input or the difference of two sums ends up with a small class.
    """
    vecs = [[f.get(h, 0) for h in honest] for f in funcs]
    r, basis = rank(vecs)
    if r == 0:
        return None
    classes: dict[tuple, list] = {}
    for j, h in enumerate(honest):
        column = tuple(b[j] for b in basis)
        if any(column):
            classes.setdefault(column, []).append(h)
    small = sorted((members for members in classes.values() if len(members) + colluders < t),
                   key=len)
    if not small:
        return None
    return (f"learns {r} independent combination(s) that single out {small[0]} "
            f"({len(small[0])} honest + {colluders} colluders < t={t})")


# ------------------------------------------------------------------ from a World
def _unmask_entries(raw: bytes, session_id: bytes):
    body = m.open_envelope(raw, m.MsgType.UNMASK, session_id).body
    count = int.from_bytes(body[:4], "big")
    size = m._UNMASK_ENTRY.size
    return [m._UNMASK_ENTRY.unpack_from(body, 4 + i * size) for i in range(count)
            if 4 + (i + 1) * size <= len(body)]


def _kind_of(owner, holder: int, share: bytes) -> str | None:
    e = owner.entries.get(holder)
    if e is None:
        return None
    sid, oid = owner.sid, owner.key[1]
    if crypto.commitment(derivation.SELF_MASK, sid, oid, holder, share) == e.commit_self_mask:
        return SELF
    if crypto.commitment(derivation.MASK_KEY, sid, oid, holder, share) == e.commit_mask_key:
        return MASK
    return None


def knowledge_of(world, same_inputs: bool = False) -> tuple[list[dict], list[str]]:
    """(the functionals of honest inputs the server can compute, honest instances that revealed
    both shares of one owner)."""
    problems = []
    insts = list(world.all_instances())
    for i in insts:
        i.sid = world.sessions[i.key[0]].session_id
    owners_by_id: dict[int, list] = {}
    for i in insts:
        if i.entries:
            owners_by_id.setdefault(i.key[1], []).append(i)
    valid: dict[tuple, dict[int, bytes]] = {}  # (owner key, kind) -> {holder id: share}

    def offer(holder_key, owner_id: int, share: bytes, honest: bool, revealed: dict):
        for o in owners_by_id.get(owner_id, []):
            kind = _kind_of(o, holder_key[1], share)
            if kind is not None:
                valid.setdefault((o.key, kind), {})[holder_key[1]] = share
                if honest:
                    revealed.setdefault(o.key, set()).add(kind)

    for h in insts:
        colluder = h.key[1] in world.colluders
        revealed: dict = {}
        if h.unmask:
            for owner_id, _label, share in _unmask_entries(h.unmask, h.sid):
                offer(h.key, owner_id, share, not colluder, revealed)
        if colluder and h.secrets:
            for v, (sb, sk) in h.secrets["held"].items():
                for val in (sb, sk):
                    if val is not None:
                        offer(h.key, v, shamir.to_bytes(val), False, revealed)
        for owner, kinds in revealed.items():
            if len(kinds) == 2:
                problems.append(f"honest {h.key} revealed both shares of {owner}")

    known_b, known_k = set(), set()
    for i in insts:
        if i.key[1] in world.colluders and i.secrets:
            known_b.add(i.key)
            known_k.add(i.key)
    for (okey, kind), shares in valid.items():
        o = world.inst(okey)
        t = o.cfg.threshold
        if len(shares) < t:
            continue
        pts = [(h + 1, shamir.from_bytes(s)) for h, s in sorted(shares.items())][:t]
        try:
            secret = shamir.reconstruct(pts, t)
        except ValueError:
            continue
        if secret >= 2**256:
            continue
        sb = secret.to_bytes(32, "big")
        if kind == SELF and crypto.commitment(derivation.SELF_MASK_SEED, o.sid, okey[1], okey[1],
                                              sb) == o.secret_commitment:
            known_b.add(okey)
        if kind == MASK:
            try:
                if crypto.AgreementKey.from_private_bytes(sb).public == o.mask_public:
                    known_k.add(okey)
            except ValueError:
                pass

    by_pk = {i.mask_public: i.key for i in insts if i.mask_public}
    rows, known = [], set()
    for i in insts:
        if not i.masked:
            continue
        colluder = i.key[1] in world.colluders
        var = None if colluder else (i.key[1] if same_inputs else i.key)
        row = Row(var, {("self", i.self_seed): 1})
        if i.key in known_b:
            known.add(("self", i.self_seed))
        for seed, sign, peer_pk in i.pairwise:
            var = ("pair", seed)
            row.masks[var] = (row.masks.get(var, 0) + sign) % P
            peer = by_pk.get(peer_pk)
            if (i.key in known_k or (peer is not None and peer in known_k)
                    or colluder or (peer is not None and peer[1] in world.colluders)):
                known.add(var)
        rows.append(row)
    return knowledge(rows, known), problems


def analyse(world, same_inputs: bool = False) -> list[str]:
    """Every violation in what ``world``'s server collected (empty: none). ``same_inputs``: a
    client's input is one variable in every session (a retried round that resubmits it), and the
    check is made over clients instead of instances (also when ``world.same_inputs``)."""
    same_inputs = same_inputs or getattr(world, "same_inputs", False)
    funcs, problems = knowledge_of(world, same_inputs)
    t = min(s.nominal.threshold for s in world.sessions)
    if same_inputs:
        honest = [c for c in world.ids if c not in world.colluders]
    else:
        honest = [(s.index, c) for s in world.sessions for c in world.ids
                  if c not in world.colluders]
    why = allowed(funcs, honest, len(world.colluders), t)
    return problems + ([("over both runs: " if same_inputs else "") + why] if why else [])
