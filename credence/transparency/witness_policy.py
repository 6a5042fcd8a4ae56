"""Who must cosign a checkpoint: k of n witness keys (C2SP tlog-policy).

The manifest lists each witnessing member's cosigning key and the quorum k;
:func:`policy_from_manifest` turns that into a :class:`WitnessPolicy`, and
:func:`verify_cosigned` checks that a checkpoint is signed by the log and
cosigned by at least k of the listed witnesses. :func:`format_policy` and
:func:`parse_policy` read and write the policy as a tlog-policy file (one log,
``witness`` lines, at most one ``group`` of witnesses, one ``quorum`` line),
so an outside verifier can be configured from it.

Pure functions, ``now`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.errors import CredenceError, InvalidInput, VerificationError
from credence.manifest import TrustedManifest
from credence.transparency.checkpoint import Checkpoint, open_checkpoint
from credence.transparency.cosignature import open_cosignature
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import (
    COSIGNATURE_TYPE,
    ED25519_TYPE,
    Note,
    key_id,
    std_b64decode,
    vkey,
)

#: Cosignatures dated further in the future than this are ignored.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_MAX_WITNESSES = 64


class QuorumNotMet(VerificationError):
    """A checkpoint carries fewer valid cosignatures than the policy's quorum."""


@dataclass(frozen=True)
class Witness:
    """One witness: its note key name and 32-byte Ed25519 cosigning key."""

    name: str
    public_key: bytes

    @property
    def vkey(self) -> str:
        """The witness's verifier key string (type 0x04)."""
        return vkey(self.name, COSIGNATURE_TYPE, self.public_key)


@dataclass(frozen=True)
class WitnessPolicy:
    """A log and the k of n witnesses that must cosign its checkpoints (k = 0: none)."""

    origin: str
    log_public_key: bytes
    witnesses: tuple[Witness, ...]
    threshold: int

    def __post_init__(self) -> None:
        if len(self.witnesses) > _MAX_WITNESSES:
            raise InvalidInput(
                f"a policy lists at most {_MAX_WITNESSES} witnesses, got {len(self.witnesses)}"
            )
        if not 0 <= self.threshold <= len(self.witnesses):
            raise InvalidInput(
                f"witness quorum {self.threshold} must be between 0 and the "
                f"{len(self.witnesses)} witnesses listed"
            )
        names = [witness.name for witness in self.witnesses]
        keys = [witness.public_key for witness in self.witnesses]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise InvalidInput("a policy lists each witness name and key once")
        for witness in self.witnesses:
            key_id(witness.name, COSIGNATURE_TYPE, witness.public_key)
            if len(witness.public_key) != 32:
                raise InvalidInput(f"witness {witness.name!r} key is not 32 bytes")


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint that met its policy: who cosigned it, and as of when."""

    checkpoint: Checkpoint
    note: Note
    cosigners: tuple[str, ...]
    #: The k-th newest cosignature time: k witnesses had seen it by then
    #: (``None`` when the quorum is 0).
    cosigned_at: datetime | None


def witness_name(federation_id: str, member_id: str) -> str:
    """The note key name of a member's witness key."""
    return f"credence/{federation_id}/witness/{member_id}"


def majority(witnesses: int) -> int:
    """The default quorum: more than half of ``witnesses`` (0 when there are none)."""
    return witnesses // 2 + 1 if witnesses else 0


def policy_from_manifest(manifest: TrustedManifest) -> WitnessPolicy:
    """The federation's log and its witnesses' quorum, as the manifest publishes them.

    Raises:
        UnknownKey: the manifest's log key id is not one of the registry's keys.
        InvalidInput: the witnesses or quorum break a policy rule.
    """
    log = LogIdentity.from_manifest(manifest)
    witnesses = tuple(
        Witness(witness_name(manifest.federation_id, member.member_id), member.witness_key)
        for member in manifest.witnesses
        if member.witness_key is not None
    )
    return WitnessPolicy(
        origin=log.origin,
        log_public_key=log.public_key,
        witnesses=witnesses,
        threshold=manifest.witness_quorum,
    )


def verify_cosigned(data: bytes, policy: WitnessPolicy, *, now: datetime) -> Cosigned:
    """Check a checkpoint's log signature and its quorum of cosignatures.

    Cosignatures by keys the policy does not list, ones that do not verify and
    ones dated more than :data:`MAX_CLOCK_SKEW` ahead of ``now`` are ignored;
    each witness counts once.

    Raises:
        InvalidInput: the note or checkpoint is malformed, or is another log's.
        BadSignature: the log's signature is missing or does not verify.
        QuorumNotMet: fewer than ``policy.threshold`` witnesses cosigned it.
    """
    checkpoint, note = open_checkpoint(data, policy.origin, policy.log_public_key)
    times: dict[str, datetime] = {}
    for witness in policy.witnesses:
        wanted = key_id(witness.name, COSIGNATURE_TYPE, witness.public_key)
        for line in note.signatures:
            if line.name != witness.name or line.key_id != wanted:
                continue
            try:
                at = open_cosignature(note.text, line, witness.name, witness.public_key)
            except CredenceError:
                continue
            if at <= now + MAX_CLOCK_SKEW:
                times[witness.name] = max(at, times.get(witness.name, at))
    if len(times) < policy.threshold:
        signed = ", ".join(sorted(times)) or "none"
        raise QuorumNotMet(
            f"checkpoint of size {checkpoint.size} of {policy.origin!r} is cosigned by "
            f"{len(times)} of the {len(policy.witnesses)} witnesses ({signed}); the "
            f"manifest requires {policy.threshold}"
        )
    newest = sorted(times.values(), reverse=True)
    cosigned_at = newest[policy.threshold - 1] if policy.threshold else None
    return Cosigned(
        checkpoint=checkpoint,
        note=note,
        cosigners=tuple(sorted(times)),
        cosigned_at=cosigned_at,
    )


def format_policy(policy: WitnessPolicy) -> str:
    """The policy as a tlog-policy file.

    Raises:
        InvalidInput: a key name is malformed.
    """
    lines = [f"log {vkey(policy.origin, ED25519_TYPE, policy.log_public_key)}"]
    labels = [f"w{position}" for position in range(1, len(policy.witnesses) + 1)]
    lines.extend(
        f"witness {label} {witness.vkey}"
        for label, witness in zip(labels, policy.witnesses, strict=True)
    )
    if policy.threshold == 0:
        lines.append("quorum none")
    else:
        lines.append(f"group quorum {policy.threshold} {' '.join(labels)}")
        lines.append("quorum quorum")
    return "".join(f"{line}\n" for line in lines)


def parse_policy(text: str) -> WitnessPolicy:
    """Read a tlog-policy file with one log and a quorum over witnesses.

    Groups of groups are not supported: a group lists witnesses only.

    Raises:
        InvalidInput: malformed lines, unknown or duplicate names, a key of the wrong
            type, no log or more than one, no quorum line or more than one.
    """
    reader = _PolicyReader()
    for number, raw in enumerate(text.split("\n"), 1):
        words = raw.split()
        if words and not words[0].startswith("#"):
            reader.line(words, f"policy line {number}")
    return reader.policy()


class _PolicyReader:
    def __init__(self) -> None:
        self.log: tuple[str, bytes] | None = None
        self.witnesses: dict[str, Witness] = {}
        self.groups: dict[str, tuple[int, tuple[str, ...]]] = {}
        self.quorum: tuple[int, tuple[str, ...]] | None = None

    def _new_name(self, name: str, where: str) -> None:
        if name in self.witnesses or name in self.groups or name == "none":
            raise InvalidInput(f"{where}: the name {name!r} is defined twice")

    def line(self, words: list[str], where: str) -> None:
        match words:
            case ["log", key, *_]:
                if self.log is not None:
                    raise InvalidInput(f"{where}: this verifier takes one log per policy")
                self.log = _read_vkey(key, ED25519_TYPE, where)
            case ["witness", name, key, *_]:
                self._new_name(name, where)
                key_name, public_key = _read_vkey(key, COSIGNATURE_TYPE, where)
                self.witnesses[name] = Witness(name=key_name, public_key=public_key)
            case ["group", name, k, *members] if members:
                self._new_name(name, where)
                if unknown := [m for m in members if m not in self.witnesses]:
                    raise InvalidInput(
                        f"{where}: group members {unknown} are not witnesses defined above"
                    )
                if len(set(members)) != len(members):
                    raise InvalidInput(f"{where}: a group lists each member once")
                self.groups[name] = (_threshold(k, len(members), where), tuple(members))
            case ["quorum", name]:
                self._quorum(name, where)
            case _:
                raise InvalidInput(f"{where} is not a log, witness, group or quorum line")

    def _quorum(self, name: str, where: str) -> None:
        if self.quorum is not None:
            raise InvalidInput(f"{where}: a policy has one quorum line")
        if name == "none":
            self.quorum = (0, ())
        elif name in self.witnesses:
            self.quorum = (1, (name,))
        elif name in self.groups:
            self.quorum = self.groups[name]
        else:
            raise InvalidInput(f"{where}: quorum {name!r} is not defined above")

    def policy(self) -> WitnessPolicy:
        if self.log is None:
            raise InvalidInput("the policy names no log")
        if self.quorum is None:
            raise InvalidInput("the policy has no quorum line")
        threshold, members = self.quorum
        return WitnessPolicy(
            origin=self.log[0],
            log_public_key=self.log[1],
            witnesses=tuple(self.witnesses[name] for name in members),
            threshold=threshold,
        )


def _threshold(word: str, members: int, where: str) -> int:
    if word == "all":
        return members
    if word == "any":
        return 1
    if not word.isdigit() or word != str(int(word)) or not 1 <= int(word) <= members:
        raise InvalidInput(f"{where}: group threshold {word!r} must be all, any or 1..{members}")
    return int(word)


def _read_vkey(text: str, key_type: int, where: str) -> tuple[str, bytes]:
    name, _, rest = text.partition("+")
    hex_id, _, encoded = rest.partition("+")
    raw = std_b64decode(encoded, f"{where}: the vkey's key")
    if len(raw) != 33 or raw[0] != key_type:
        raise InvalidInput(
            f"{where}: the vkey is not a type 0x{key_type:02x} Ed25519 key (33 bytes)"
        )
    if key_id(name, key_type, raw[1:]).hex() != hex_id:
        raise InvalidInput(f"{where}: the vkey's key id {hex_id!r} does not match its key")
    return name, raw[1:]
