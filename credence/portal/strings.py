"""Every word the portal shows, in one catalogue so a translation can follow.

A translation is another dictionary with the same keys (a test checks that
every key a template or view uses is here). Values are
:meth:`str.format` templates; the portal fills them, Jinja2 escapes them.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CATALOGUES", "Catalogue"]

ENGLISH: Mapping[str, str] = {
    # The frame of every page.
    "site.name": "Your Credence page",
    "site.skip": "Skip to the content",
    "site.nav": "Sections",
    "site.footer": "This page runs on your own computer. Your key never leaves it; the "
    "registry only sees requests you sign.",
    "site.stop": "To close the portal, stop the command that started it (Ctrl+C).",
    "nav.lookups": "Who looked me up",
    "nav.grants": "My permissions",
    "nav.records": "My records",
    "nav.contests": "My disputes",
    "nav.explanations": "Why my scores",
    "nav.reviews": "Reviews by a person",
    # Who looked me up.
    "lookups.title": "Who looked me up",
    "lookups.intro": "Every time a member of the federation asked about you, including "
    "attempts that were refused. Lookups made under a legal mandate appear once the "
    "period the law allows to keep them secret has ended.",
    "lookups.none": "Nobody has looked you up.",
    "lookups.caption": "Lookups, newest first",
    "lookups.when": "When",
    "lookups.who": "Who",
    "lookups.why": "Why",
    "lookups.what": "What they asked",
    "lookups.outcome": "Outcome",
    "lookups.basis": "On what basis",
    "lookups.served": "Answered",
    "lookups.refused": "Refused: {reason}",
    "basis.consent": "your permission {grant_id}",
    "basis.other": "{basis}",
    "basis.none": "none given",
    "lookups.review": "Ask a person to review this answer",
    # My permissions.
    "grants.title": "My permissions",
    "grants.intro": "The permissions you gave, and the legal mandates about you. Once you "
    "withdraw a permission, every later lookup with it is refused.",
    "grants.none": "No permission or mandate names you.",
    "grants.consent": "Permission for {requester}",
    "grants.mandate": "Legal mandate for {requester}",
    "grants.id": "Reference",
    "grants.purpose": "Purpose",
    "grants.covers": "Covers",
    "grants.uses": "Used",
    "grants.uses_of": "{uses} of {max_uses} times",
    "grants.uses_only": "{uses} times",
    "grants.until": "Valid until",
    "grants.revoked": "Withdrawn on {when}",
    "grants.active": "In force",
    "grants.state": "State",
    "grants.revoke": "Withdraw this permission",
    "grants.confirm_title": "Withdraw a permission",
    "grants.confirm": "Withdraw your permission {grant_id} for {requester}? From now on "
    "every lookup with it is refused. This cannot be undone: they would have to ask you "
    "again.",
    "grants.confirm_yes": "Yes, withdraw it",
    "grants.confirm_no": "No, keep it",
    "grants.done": "Your permission {grant_id} was withdrawn on {when}.",
    "grants.already": "Your permission {grant_id} was already withdrawn on {when}; nothing "
    "changed.",
    "grants.unknown": "No permission {grant_id} names you: pick one from the list.",
    # My records.
    "records.title": "My records",
    "records.intro": "What each agency holds about you. Each agency sealed its answer to a "
    "key made on this computer for this page, so only you can read it: the registry "
    "passed it on without being able to open it.",
    "records.agency": "At {agency}",
    "records.none_held": "{agency} holds no record of you.",
    "records.problem": "The answer of {agency} could not be read: {problem}",
    "records.shown": "{shown} of {total} records shown.",
    "records.kind": "Record",
    "records.category": "Listed as",
    "records.status": "Status",
    "records.since": "Since",
    "records.until": "Counts until",
    "records.amount": "Amount",
    "records.overdue": "Days overdue",
    "records.disputed": "Disputed",
    "records.disputed_yes": "Yes, you disputed it",
    "records.disputed_no": "No",
    "records.contest": "Dispute the records at {agency}",
    "records.no_agencies": "The federation has no agencies yet.",
    # My disputes.
    "contests.title": "My disputes",
    "contests.intro": "If a record is wrong, dispute it. The agency marks the records "
    "disputed at once: every later answer about you says so until the agency resolves "
    "your dispute.",
    "contests.new": "Dispute records",
    "contests.agency": "Agency holding the records",
    "contests.kind": "Which records",
    "contests.kind_all": "All my records there",
    "contests.kind_help": "Leave this on all records unless only one kind of record is "
    "wrong; pick a kind the agency you chose holds.",
    "contests.statement": "What is wrong, in your words",
    "contests.statement_help": "For example: this judgment was paid in full in March.",
    "contests.send": "Send the dispute",
    "contests.filed": "Your dispute {contest_id} was sent to {agency}: {flagged} record(s) "
    "are now marked disputed.",
    "contests.mine": "Disputes you sent",
    "contests.none": "You have not disputed any record.",
    "contests.caption": "Your disputes and their state",
    "contests.id": "Dispute",
    "contests.at": "Agency",
    "contests.which": "Records",
    "contests.state": "State",
    "contests.filed_at": "Sent",
    "contests.resolved_at": "Resolved",
    "contests.not_yet": "not yet",
    "contests.statement_missing": "Say what is wrong with the records before sending.",
    "contests.statement_long": "Keep your statement under {limit} characters.",
    "contests.agency_missing": "Pick the agency that holds the records.",
    "contests.due_at": "Answer due by",
    "contests.no_due": "no date",
    "contests.overdue": "The agency did not answer by {day}. Until it does, this record does "
    "not count in any verdict.",
    # Why my scores.
    "explanations.title": "Why my scores",
    "explanations.intro": "Each credit score the federation gave about you, and how it was "
    "worked out: the points every score starts from, what the agencies' records added or "
    "took away in total, and the main reasons, with the score you would have had without "
    "each. The registry signed each explanation; it never says which agency a figure came "
    "from.",
    "explanations.none": "No credit score has been given about you.",
    "explanations.heading": "Score for {requester}, {when}",
    "explanations.who": "Asked by",
    "explanations.when": "When",
    "explanations.why": "Why",
    "explanations.score": "Your score",
    "explanations.score_is": "{score}, in the band \u201c{band}\u201d",
    "explanations.meter": "Score {score} on a scale from {low} to {high}",
    "explanations.bands": "The bands of the scorecard",
    "explanations.band": "Band",
    "explanations.from": "From",
    "explanations.to": "To",
    "explanations.yours": "Yours",
    "explanations.yours_mark": "your score is in this band",
    "explanations.base": "Points every score starts from",
    "explanations.added": "What the agencies' records changed, in total",
    "explanations.points": "{points} points",
    "explanations.reasons": "The main reasons",
    "explanations.no_reasons": "No record cost you points.",
    "explanations.reason": "{text} (code {code})",
    "explanations.reason_cost": "It took {points} points off your score.",
    "explanations.reason_gain": "It added {points} points to your score.",
    "explanations.without": "Without this, your score would be {score}, in the band "
    "\u201c{band}\u201d.",
    "explanations.provisional": "This score is provisional: {answering} of the {expected} "
    "credit agencies answered, fewer than the scorecard asks for.",
    "explanations.disputed": "You dispute a record this score counted: the agency has not "
    "resolved it yet.",
    "explanations.scorecard": "Scorecard",
    "explanations.scorecard_is": "version {version} (published in federation manifest {manifest})",
    "explanations.scorecard_read": "Read the scorecard",
    "explanations.verdict": "Reference",
    "explanations.review": "Ask a person to review this score",
    "explanations.review_help": "A person at the registry will look at this score again, "
    "and the agencies whose records it counted are told. Say what you want them to look at.",
    # Reviews by a person.
    "reviews.title": "Reviews by a person",
    "reviews.intro": "You can ask for a person to look again at any answer the federation "
    "gave about you. Your request is written in the registry's public log, the agencies "
    "whose records the answer counted are told, and a person at the registry decides: "
    "either the answer stands or it is corrected. Their decision, with their reasons, "
    "appears here, signed by the registry.",
    "reviews.new": "Ask for a review",
    "reviews.verdict": "Reference of the answer",
    "reviews.verdict_help": "The reference shown beside a lookup or a score (the links "
    '"Ask a person to review" fill it in).',
    "reviews.statement": "What should the person look at, in your words",
    "reviews.statement_help": "For example: the late payment in this score was my bank's "
    "error and was corrected.",
    "reviews.next": "What happens next: the request is logged and the agencies are told at "
    "once; the decision appears on this page when a person has made it.",
    "reviews.send": "Ask for the review",
    "reviews.sent": "Your review {review_id} was asked for. Agencies told: {agencies}.",
    "reviews.verdict_missing": "Give the reference of the answer to review.",
    "reviews.statement_missing": "Say what the person should look at before sending.",
    "reviews.statement_long": "Keep your statement under {limit} characters.",
    "reviews.mine": "Reviews you asked for",
    "reviews.none": "You have not asked for any review.",
    "reviews.heading": "Review {review_id}",
    "reviews.of": "Of the answer",
    "reviews.asked": "Asked for",
    "reviews.yours": "What you said",
    "reviews.told": "Agencies told",
    "reviews.told_none": "none",
    "reviews.state": "State",
    "reviews.decision": "The decision",
    "reviews.decided": "Decided",
    "reviews.reviewer": "By",
    "reviews.reasons": "Their reasons",
    "reviews.signed": "This decision is signed by the registry.",
    "review.open": "Open: waiting for a person to decide",
    "review.upheld": "Decided: the answer stands",
    "review.corrected": "Decided: the answer was corrected",
    "review.unknown": "{name}",
    "state.open": "Open: the agency is looking at it",
    "state.upheld": "Closed: the agency kept the records as they were",
    "state.corrected": "Closed: the agency corrected the records",
    "state.removed": "Closed: the agency removed the records",
    # Words for the federation's terms.
    "purpose.PURPOSE_COUNTERPARTY_VERIFICATION": "checking you before doing business with you",
    "purpose.PURPOSE_CREDIT_ASSESSMENT": "deciding on a loan or credit",
    "purpose.PURPOSE_TENANCY_SCREENING": "deciding on a tenancy",
    "purpose.PURPOSE_EMPLOYMENT_SCREENING": "deciding on a job",
    "purpose.PURPOSE_LEGAL_MANDATE": "a legal mandate",
    "purpose.unknown": "a purpose not known to this page ({name})",
    "kind.VERDICT_KIND_BLACKLIST": "whether you are on a blacklist",
    "kind.VERDICT_KIND_CREDIT": "your credit score",
    "kind.unknown": "{name}",
    "list.nothing": "nothing",
    "list.and": "{first} and {last}",
    "time.never": "never",
    "time.at": "{day} at {time} UTC",
    # Errors.
    "error.title": "Something went wrong",
    "error.registry": "The registry refused or could not be reached: {reason}",
    "error.login": "This page needs the link the portal printed when it started. Open that "
    "link again, or restart the portal to get a new one.",
    "error.login_used": "This sign-in link was already used. Restart the portal "
    "(credence me portal) for a new one.",
    "error.csrf": "This form is out of date. Go back, reload the page and try again.",
    "error.host": "This page only answers at the address the portal printed.",
    "error.form": "This form could not be read. Reload the page and try again.",
    "error.not_found": "There is no such page here.",
}

#: Language tag -> catalogue. A translation adds an entry with every key of ENGLISH.
CATALOGUES: Mapping[str, Mapping[str, str]] = {"en": ENGLISH}


class Catalogue:
    """The words of one language.

    Args:
        language: a key of :data:`CATALOGUES`.

    Raises:
        KeyError: no catalogue for ``language``.
    """

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self._words = CATALOGUES[language]

    def __call__(self, key: str, **values: object) -> str:
        """The text for ``key`` with ``values`` filled in.

        Raises:
            KeyError: ``key`` is not in the catalogue (a missing string is a bug).
        """
        text = self._words[key]
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        """Whether the catalogue holds ``key``."""
        return key in self._words
