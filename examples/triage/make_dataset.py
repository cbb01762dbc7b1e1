"""Write the support-ticket triage dataset: ``train.jsonl`` and the held-out ``test.jsonl``.

Deterministic (fixed seed): running it again rewrites the same files. Each row is a chat
conversation in OpenAI ``messages`` form: the system prompt, the customer's ticket, and the
assistant's triage as one JSON object with ``category``, ``urgency``, ``summary`` and
``nextAction``. Tickets are written for this project from varied templates (billing, account
access, bugs, feature requests, security, shipping) with realistic details filled in.

    python examples/triage/make_dataset.py [--train 360] [--test 40]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Short on purpose: every row runs it through the model (CPU time in `make demo`).
SYSTEM = (
    "Triage this Lumen support ticket. Reply with JSON: category, urgency, summary, nextAction."
)

NAMES = ["Priya", "Tom", "Aiko", "Carlos", "Fatima", "Jonas", "Mei", "Olu", "Sven", "Lena", "Raj"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September"]
PLANS = ["Starter", "Team", "Business", "Enterprise"]
BROWSERS = ["Firefox", "Chrome", "Safari", "Edge"]
FEATURES = ["Gantt chart", "calendar view", "CSV export", "time tracking", "Kanban board"]
WISHES = [
    ("dark mode", "Add dark mode to the app"),
    ("a Slack integration", "Integrate with Slack"),
    ("recurring tasks", "Support recurring tasks"),
    ("custom fields on tasks", "Allow custom task fields"),
    ("an offline mode for the mobile app", "Offer offline mode on mobile"),
    ("two-level subtasks", "Support nested subtasks"),
]
CARRIERS = ["DHL", "UPS", "FedEx", "Royal Mail"]
ITEMS = ["hardware security key", "welcome kit", "printed user guide", "conference badge pack"]

# Each template: category, urgency, ticket variants, summary, nextAction. Slots in {braces}.
TEMPLATES: list[dict[str, object]] = [
    {
        "category": "billing",
        "urgency": "high",
        "tickets": [
            "Hi, I was charged twice for the {plan} plan in {month}. Two payments of ${amount} "
            "show on my card. Please refund one of them. - {name}",
            "Our company card shows a duplicate charge of ${amount} for {month}. We only have "
            "one {plan} subscription. Can you fix this quickly?",
            "double charge!! ${amount} taken two times this month ({month}) for {plan}. need "
            "my money back",
        ],
        "summary": "Duplicate ${amount} charge for {plan} plan in {month}",
        "nextAction": "Verify the duplicate payment and refund one charge",
    },
    {
        "category": "billing",
        "urgency": "low",
        "tickets": [
            "Could you send me the invoice for {month} as a PDF? Our accountant needs it "
            "with our VAT number on it. Thanks, {name}",
            "Where can I download past invoices? I need the one from {month} for our {plan} plan.",
        ],
        "summary": "Customer needs the {month} invoice as a PDF",
        "nextAction": "Send the invoice and point to the billing page",
    },
    {
        "category": "billing",
        "urgency": "medium",
        "tickets": [
            "We want to move from {plan} to a bigger plan but the upgrade button gives an "
            "error. How do we upgrade? - {name}",
            "How do I upgrade from the {plan} plan? We are adding {seats} more people next week.",
        ],
        "summary": "Customer wants to upgrade from the {plan} plan",
        "nextAction": "Explain the upgrade steps and offer to upgrade for them",
    },
    {
        "category": "account",
        "urgency": "high",
        "tickets": [
            "I can't log in. The password reset email never arrives, I checked spam too. "
            "I have a client meeting in an hour. - {name}",
            "Locked out of my account since this morning. Reset link never comes. My "
            "email is {user}@example.com",
            "password reset not working, no email received after {tries} tries. please help",
        ],
        "summary": "Locked out; password reset email not arriving",
        "nextAction": "Check email delivery logs and send a manual reset link",
    },
    {
        "category": "account",
        "urgency": "low",
        "tickets": [
            "How can I change the email address on my account? I moved to a new company "
            "domain. Thanks, {name}",
            "Please rename our workspace from '{team} Old' to '{team}'. I can't find the setting.",
        ],
        "summary": "Customer wants to update account details",
        "nextAction": "Send the steps to change it in settings",
    },
    {
        "category": "account",
        "urgency": "medium",
        "tickets": [
            "I invited {seats} teammates but none of them received the invite. Can you check? "
            "- {name}",
            "New team members can't join our {team} workspace, the invite link says expired.",
        ],
        "summary": "Team invites are not reaching new members",
        "nextAction": "Resend the invites and check the invite expiry setting",
    },
    {
        "category": "bug",
        "urgency": "medium",
        "tickets": [
            "The {feature} doesn't load in {browser}. It just shows a spinner forever. "
            "Works in other browsers. - {name}",
            "When I open the {feature} in {browser} the page is blank. Console says "
            "'TypeError: cannot read properties of undefined'.",
            "{feature} broken on {browser} since yesterday's update. Please fix.",
        ],
        "summary": "{feature} does not load in {browser}",
        "nextAction": "Reproduce in {browser} and file a bug with the console error",
    },
    {
        "category": "bug",
        "urgency": "critical",
        "tickets": [
            "URGENT: the whole app shows 'Error 500' for everyone in our company. {seats} "
            "people can't work. - {name}, {team}",
            "Nothing loads, every page returns a server error in {browser}. Our entire team "
            "at {team} is blocked!",
        ],
        "summary": "App returns server errors for the whole team",
        "nextAction": "Escalate to the on-call engineer and post a status update",
    },
    {
        "category": "bug",
        "urgency": "low",
        "tickets": [
            "Small thing: the due date in the {feature} shows the wrong day when I use the "
            "{month} calendar. Not urgent. - {name}",
            "Typo on the {feature} settings page: 'notifcations' instead of 'notifications'. "
            "- {name}",
        ],
        "summary": "Minor display issue reported",
        "nextAction": "Log a low-priority bug for the UI team",
    },
    {
        "category": "feature_request",
        "urgency": "low",
        "tickets": [
            "Love the app! Would it be possible to get {wish}? Our team would use it daily. "
            "- {name}",
            "Feature request: {wish}. Other tools we tried have it.",
            "Any plans for {wish}? It's the one thing missing for {team}.",
        ],
        "summary": "Request: {wish}",
        "nextAction": "{wish_action}: log it on the roadmap board and thank the customer",
    },
    {
        "category": "security",
        "urgency": "critical",
        "tickets": [
            "Someone logged into my account from another country and changed my password. "
            "I think I was hacked. - {name}",
            "We see logins from an unknown IP on our admin account and {seats} projects were "
            "deleted. Please help immediately.",
        ],
        "summary": "Possible account takeover reported",
        "nextAction": "Lock the account, revoke sessions and escalate to security",
    },
    {
        "category": "security",
        "urgency": "medium",
        "tickets": [
            "Our security team asks whether Lumen supports SSO with SAML and has a SOC 2 "
            "report. - {name}, {team}",
            "Do you offer two-factor authentication? Our policy at {team} requires it for all "
            "tools.",
        ],
        "summary": "Security and compliance question",
        "nextAction": "Send the security overview and SSO documentation",
    },
    {
        "category": "shipping",
        "urgency": "medium",
        "tickets": [
            "We ordered a {item} {days} days ago and it still hasn't arrived. Tracking with "
            "{carrier} shows no update. - {name}",
            "Where is our {item}? The {carrier} tracking number doesn't work.",
        ],
        "summary": "{item} delayed; {carrier} tracking not updating",
        "nextAction": "Contact {carrier} about the shipment and update the customer",
    },
    {
        "category": "shipping",
        "urgency": "high",
        "tickets": [
            "The {item} arrived damaged and we need it for an audit on Monday. Please send a "
            "replacement. - {name}",
            "Received a broken {item}. We need a new one before the end of the week!",
        ],
        "summary": "Damaged {item} needs urgent replacement",
        "nextAction": "Ship a replacement by express and arrange a return",
    },
]

TEAMS = ["Acme Design", "Northwind", "Blue Harbor", "Kite Labs", "Orbit Health", "Tandem Ops"]


def _slots(rng: random.Random) -> dict[str, str]:
    wish, wish_action = rng.choice(WISHES)
    name = rng.choice(NAMES)
    return {
        "name": name,
        "user": name.lower(),
        "month": rng.choice(MONTHS),
        "plan": rng.choice(PLANS),
        "amount": f"{rng.choice([12, 24, 49, 99, 199, 480])}.00",
        "browser": rng.choice(BROWSERS),
        "feature": rng.choice(FEATURES),
        "wish": wish,
        "wish_action": wish_action,
        "carrier": rng.choice(CARRIERS),
        "item": rng.choice(ITEMS),
        "days": str(rng.randint(6, 21)),
        "seats": str(rng.randint(3, 40)),
        "tries": str(rng.randint(2, 5)),
        "team": rng.choice(TEAMS),
    }


def make_row(rng: random.Random, template: dict[str, object]) -> dict[str, object]:
    """One conversation from ``template`` with random slot values."""
    slots = _slots(rng)
    ticket = str(rng.choice(template["tickets"])).format(**slots)  # type: ignore[arg-type]
    answer = {
        "category": template["category"],
        "urgency": template["urgency"],
        "summary": str(template["summary"]).format(**slots),
        "nextAction": str(template["nextAction"]).format(**slots),
    }
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": ticket},
            {"role": "assistant", "content": json.dumps(answer)},
        ]
    }


def build(
    train: int, test: int, seed: int = 7
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Train and test rows from the templates in turn; no ticket text is in both."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible dataset, not secrets
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for attempt in range(100 * (train + test)):
        if len(rows) == train + test:
            break
        row = make_row(rng, TEMPLATES[attempt % len(TEMPLATES)])
        text = row["messages"][1]["content"]  # type: ignore[index]
        if text in seen:
            continue
        seen.add(text)
        rows.append(row)
    rng.shuffle(rows)
    return rows[:train], rows[train:]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def main() -> None:
    """Write train.jsonl and test.jsonl next to this file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--test", type=int, default=40)
    args = parser.parse_args()
    train, test = build(args.train, args.test)
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {HERE}")


if __name__ == "__main__":
    main()
