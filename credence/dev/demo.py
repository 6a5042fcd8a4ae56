"""``make demo``: a short, verified story on a local federation.

A registry and three agencies (a court, a tax office, a bank) come up on
loopback, each its own process with its own database and real mutual TLS.
Then: a company checks two counterparties, a lender checks a person's credit
with that person's consent, the same check without consent is refused, 10,000
organisations are screened, the person reads who looked them up, and
everything comes down again. Every verdict's signature is verified and said so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from credence.cli.command import fold_example
from credence.client.requester import MemberCredentials, Requester, ScreenRow, VerifiedVerdict
from credence.client.subject import SubjectClient
from credence.dev import federation as dev_federation
from credence.errors import CredenceError
from credence.explanations import describe
from credence.keys import KeySet, load_signing_key
from credence.subjects import PseudonymisationKey, ref_for
from credence.v1 import agency_pb2

BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
WIDTH = 80
INDENT = "   "


class Story:
    """Prints the steps; colour only on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.started = time.monotonic()
        self.step = 0

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.tty else text

    def title(self, text: str) -> None:
        """Start the next step."""
        self.step += 1
        elapsed = time.monotonic() - self.started
        print(f"\n{self._c(BOLD, f'{self.step}. {text}')} {self._c(DIM, f'[{elapsed:.1f}s]')}")

    def ok(self, text: str) -> None:
        """A step that succeeded as it should."""
        print(f"   {self._c(GREEN, 'ok')}  {text}")

    def refused(self, text: str) -> None:
        """A refusal, as it should be."""
        print(f"   {self._c(RED, 'refused')}  {text}")

    def lines(self, texts: Sequence[str]) -> None:
        """Sentences, each wrapped within :data:`WIDTH` columns under the step."""
        for text in texts:
            for line in textwrap.wrap(text, WIDTH - 2 * len(INDENT), break_long_words=False):
                print(f"{INDENT}{INDENT}{line}")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A readable table within :data:`WIDTH` columns; the last column wraps at words."""
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)
        ]
        room = WIDTH - len(INDENT) - sum(width + 2 for width in widths[:-1])
        widths[-1] = max(len(header[-1]), min(widths[-1], room))
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))
        print(f"{INDENT}{self._c(BOLD, line.rstrip())}")
        for row in rows:
            last = textwrap.wrap(str(row[-1]), widths[-1], break_long_words=False) or [""]
            lead = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
            print(INDENT + "  ".join([*lead[:-1], last[0]]).rstrip())
            blank = " " * (sum(width + 2 for width in widths[:-1]))
            for more in last[1:]:
                print(f"{INDENT}{blank}{more}")


def _verdict_row(identifier: str, verified: VerifiedVerdict) -> list[object]:
    verdict = verified.verdict
    return [
        identifier,
        (verified.status or "-").upper(),
        ", ".join(verified.categories) or "-",
        "yes" if verdict.blacklist.disputed else "no",
        verified.coverage,
    ]


def _screen(company: Requester, pseudonymisation: PseudonymisationKey, story: Story) -> None:
    story.title("Screening 10,000 organisations (batch, public-register basis)")
    rows_in = [
        ScreenRow(f"row-{index}", ref_for(pseudonymisation, f"reg:CN:ORG{index % 200:06d}"))
        for index in range(10_000)
    ]
    counts: dict[str, int] = {}
    started = time.monotonic()
    for done, outcome in enumerate(company.screen(rows_in, message_size=1000), start=1):
        status = (outcome.verdict.status if outcome.verdict else "refused") or "-"
        counts[status] = counts.get(status, 0) + 1
        if done % 1000 == 0 and (story.tty or done == len(rows_in)):
            bar = "#" * int(done / len(rows_in) * 30)
            rate = done / max(time.monotonic() - started, 1e-6)
            end = "" if story.tty and done < len(rows_in) else "\n"
            print(f"\r   [{bar:<30}] {done:>6,}/{len(rows_in):,}  {rate:,.0f}/s", end=end,
                  flush=True)  # fmt: skip
    story.table(["status", "rows"], sorted(counts.items()))
    story.ok("every verdict batch's signature verified once, every row checked against it")


def run(directory: Path, story: Story) -> dict[str, str]:
    """Tell the story in ``directory`` (the federation is brought down by the caller).

    Returns:
        The person of the story (``federation.json``'s sample: id, key and binding files).
    """
    story.title("Bringing up a federation: a registry, a court, a tax office, a bank")
    federation = dev_federation.up(
        directory, agencies=3, subjects=200, progress=lambda message: print(f"   … {message}")
    )
    registry = federation["registry"]
    root_keys = KeySet.from_jwks(json.loads(Path(registry["root_keys"]).read_text()))
    pseudonymisation = PseudonymisationKey.from_bytes(
        Path(federation["pseudonymisation_key"]).read_bytes()
    )
    ca = Path(registry["ca_cert"])

    def credentials(role: str) -> MemberCredentials:
        files = federation[role]
        return MemberCredentials.from_files(
            files["member_id"], key=Path(files["key"]), cert=Path(files["cert"]), ca=ca,
            signing_key=Path(files["signing_key"]),
        )  # fmt: skip

    story.ok(f"{len(federation['agencies'])} agencies serving over mutual TLS; every record "
             "stays on its own node")  # fmt: skip
    samples = federation["samples"]
    with Requester(registry["address"], credentials("company"), root_keys=root_keys) as company:
        story.title("A company checks two organisations before signing a contract")
        rows = []
        for identifier in (samples["clear_organisation"][0], samples["listed_organisation"][0]):
            verified = company.verify_organisation(ref_for(pseudonymisation, identifier))
            rows.append(_verdict_row(identifier, verified))
        story.table(["organisation", "blacklist", "categories", "disputed", "coverage"], rows)
        kid = verified.envelope.signatures[0].keyid
        story.ok(f"both signatures verified against registry key {kid[:12]}…, issued to "
                 "demo-company")  # fmt: skip

        story.title("A lender checks a person's credit, with that person's consent")
        person: dict[str, str] = samples["person_with_consent"][0]
        grant = agency_pb2.Grant(consent_token=Path(person["consent"]).read_text())
        subject = ref_for(pseudonymisation, person["id"])
        credit = company.request_verdict(
            subject, kinds=("blacklist", "credit"), purpose="credit_assessment", grant=grant
        )
        story.table(
            ["person", "score", "band", "reasons", "provisional", "blacklist"],
            [[person["id"], credit.score, credit.band, ", ".join(credit.reason_codes) or "-",
              "yes" if credit.provisional else "no", (credit.status or "-").upper()]],
        )  # fmt: skip
        story.ok("signature verified; the person's consent allows 3 uses for credit assessment")
        if credit.explanation is not None:
            story.ok("the registry's signed explanation, checked against the verdict:")
            story.lines(describe(credit.explanation)[1:])

        story.title("The same check without consent")
        try:
            company.request_verdict(
                subject, kinds=("credit",), purpose="credit_assessment",
                grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis()),
            )  # fmt: skip
        except CredenceError as exc:
            story.refused(str(exc))
        else:  # pragma: no cover - the demo fails loudly if this ever happens
            raise SystemExit("a person was looked up without consent: this must never happen")

        _screen(company, pseudonymisation, story)

    story.title("The person reads who looked them up")
    with SubjectClient(
        registry["public_address"], ca.read_bytes(),
        subject_key=load_signing_key(Path(person["subject_key"])),
        subject_ref_hex=subject.hex(), registry_id=registry["member_id"],
    ) as me:  # fmt: skip
        lookups = me.lookups()
    story.table(
        ["when", "who", "purpose", "outcome"],
        [[f"{record.at.ToDatetime():%H:%M:%S}", record.requester,
          {1: "counterparty", 2: "credit assessment"}.get(record.purpose, str(record.purpose)),
          record.outcome] for record in lookups],
    )  # fmt: skip
    story.ok("the refused attempt is in the log too: nothing is looked up in secret")
    return person


#: Where :func:`portal_steps` suggests keeping the federation when the demo did not.
KEEP_SUGGESTED = Path("credence-demo")


def portal_steps(person: dict[str, str], directory: Path, *, kept: bool) -> list[str]:
    """How to open the portal as the story's person: the commands to type.

    A federation the demo removed is suggested kept in :data:`KEEP_SUGGESTED`
    next time: the same seed gives the same person, so the paths hold.
    """
    where = directory if kept else KEEP_SUGGESTED

    def moved(path: str) -> Path:
        return where / Path(path).resolve().relative_to(directory.resolve())

    steps = [] if kept else [f"python -m credence.dev.demo --keep {where}"]
    return [
        *steps,
        f"credence dev up --dir {where}",
        f"credence me portal --key {moved(person['subject_key'])} "
        f"--binding {moved(person['binding'])} --federation {where / 'federation.json'}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="put the federation in DIR and keep it there (keys, databases, logs); "
        "without it a temporary directory is used and removed",
    )
    args = parser.parse_args(argv)
    story = Story()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="credence-demo-"))
    person: dict[str, str] = {}
    try:
        person = run(directory, story)
    finally:
        story.title("Bringing the federation down")
        stubborn = dev_federation.down(directory)
        if stubborn:
            story.refused(f"had to kill: {', '.join(stubborn)}")
        else:
            story.ok("every process stopped")
        if args.keep is None:  # it holds the federation's root and CA keys
            shutil.rmtree(directory, ignore_errors=True)
            story.ok("its temporary directory, keys included, removed")
        else:
            story.ok(f"kept in {directory}")
    print(f"\ndone in {time.monotonic() - story.started:.1f}s")
    if person:
        print()
        print(textwrap.fill(f"Open the portal as {person['id']}, the person in this story, to "
                            "see the same lookups, their consent, their records and disputes, "
                            "why their scores are what they are, and to ask a person to review "
                            "one, in a browser (with its virtualenv active: "
                            "`. .venv/bin/activate`):",
                            WIDTH))  # fmt: skip
        for step in portal_steps(person, directory.resolve(), kept=args.keep is not None):
            print("\n".join(fold_example(f"{INDENT}{step}", WIDTH)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
