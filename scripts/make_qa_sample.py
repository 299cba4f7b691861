"""Write the bundled extractive-QA sample: generated SQuAD-format records about made-up people.

Each context describes 2-4 people (birth city, birth year, job) in varied sentences, so the other
people act as distractors; questions use 4 templates. Validation uses first and last names never seen in
training. `*_v2.jsonl` add unanswerable questions (about someone absent from the context, or a fact the
context does not state) with empty answers, about one in three.

Deterministic: the same seed writes byte-identical files.
    python scripts/make_qa_sample.py [--out accel_tasks/samples/extractive_qa] [--seed 13]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FIRST_NAMES = [
    "Alice",
    "Bruno",
    "Carla",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Luca",
    "Marta",
    "Nils",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Stefan",
    "Tara",
    "Umar",
    "Vera",
    "Walter",
    "Xenia",
    "Yusuf",
    "Zora",
    "Anton",
    "Beatriz",
    "Cyril",
    "Dalia",
    "Emil",
    "Fiona",
    "Goran",
    "Helga",
    "Ivo",
    "Jana",
    "Karim",
    "Lena",
    "Milan",
    "Nora",
    "Oskar",
    "Petra",
    "Rafael",
    "Selma",
    "Tomas",
    "Ulla",
    "Viktor",
    "Wanda",
    "Aaron",
    "Bianca",
    "Conrad",
    "Doris",
    "Ernesto",
    "Frida",
    "Gideon",
    "Hanna",
    "Igor",
    "Julia",
    "Kasimir",
    "Livia",
    "Magnus",
    "Nadia",
    "Otto",
    "Paula",
    "Ruben",
    "Sonja",
    "Theo",
    "Ursula",
    "Valentin",
    "Wilma",
]
LAST_NAMES = [
    "Moreau",
    "Berg",
    "Costa",
    "Novak",
    "Lindqvist",
    "Haddad",
    "Keller",
    "Rossi",
    "Petrov",
    "Duarte",
    "Jensen",
    "Okafor",
    "Varga",
    "Weber",
    "Santos",
    "Kowalski",
    "Fischer",
    "Brandt",
    "Mendes",
    "Horvat",
    "Olsen",
    "Nakamura",
    "Ferreira",
    "Kraus",
    "Larsen",
    "Popescu",
    "Schmidt",
    "Vidal",
    "Wagner",
    "Zielinski",
    "Achterberg",
    "Bauer",
    "Castell",
    "Dvorak",
    "Eriksen",
    "Fontaine",
    "Galli",
    "Hoffmann",
    "Ibarra",
    "Janssen",
    "Kaplan",
    "Lambert",
    "Marino",
    "Nowak",
    "Ortega",
    "Pires",
    "Quintero",
    "Richter",
    "Sorensen",
    "Toth",
]
CITIES = [
    "Lisbon",
    "Oslo",
    "Krakow",
    "Porto",
    "Vienna",
    "Dublin",
    "Naples",
    "Ghent",
    "Tallinn",
    "Seville",
    "Bergen",
    "Lyon",
    "Riga",
    "Zagreb",
    "Utrecht",
    "Malaga",
    "Turin",
    "Graz",
    "Aarhus",
    "Bilbao",
    "Leipzig",
    "Brno",
    "Cork",
    "Tampere",
    "Basel",
    "Bologna",
    "Gdansk",
    "Nantes",
    "Salzburg",
    "Valencia",
    "Edinburgh",
    "Uppsala",
    "New York",
    "Buenos Aires",
    "Cape Town",
    "Mexico City",
    "Kuala Lumpur",
    "Rio de Janeiro",
]
JOBS = [
    "carpenter",
    "pilot",
    "nurse",
    "chemist",
    "baker",
    "librarian",
    "architect",
    "plumber",
    "journalist",
    "dentist",
    "gardener",
    "translator",
    "electrician",
    "photographer",
    "veterinarian",
    "accountant",
    "firefighter",
    "geologist",
    "tailor",
    "lawyer",
    "pharmacist",
    "teacher",
    "surgeon",
    "software engineer",
    "marine biologist",
    "train driver",
    "social worker",
    "civil engineer",
    "bookseller",
    "sound technician",
]

# Sentence templates: every slot value appears verbatim, so answer offsets are exact.
BIRTH_TEMPLATES = [
    "{name} was born in {city} in {year}.",
    "{name}, born in {year}, grew up in {city}.",
    "In {year}, {name} was born in the city of {city}.",
    "{name} comes from {city} and was born there in {year}.",
]
JOB_TEMPLATES = [
    "{name} works as {a_job}.",
    "Today {name} is {a_job} by trade.",
    "After years of study, {name} became {a_job}.",
    "{name} earns a living as {a_job}.",
]
FILLER = [
    "{name} enjoys long walks on weekends.",
    "{name} has two younger siblings.",
    "{name} speaks three languages.",
    "Friends describe {name} as patient and curious.",
]
QUESTION_TEMPLATES = {
    "city": "Where was {name} born?",
    "year": "In which year was {name} born?",
    "job": "What does {name} do for a living?",
    "name": "Who was born in {city}?",
}


def _people(rng: random.Random, firsts: list[str], lasts: list[str], count: int) -> list[dict]:
    """`count` people with distinct full names, cities and jobs, so every question has one answer."""
    names: set[str] = set()
    while len(names) < count:
        names.add(f"{rng.choice(firsts)} {rng.choice(lasts)}")
    cities = rng.sample(CITIES, count)
    jobs = rng.sample(JOBS, count)
    years = rng.sample(range(1930, 2006), count)
    return [
        {"name": n, "city": c, "year": str(y), "job": j, "a_job": ("an " if j[0] in "aeiou" else "a ") + j}
        for n, c, y, j in zip(sorted(names), cities, years, jobs)
    ]


def _context(rng: random.Random, people: list[dict], hidden_job: str | None) -> str:
    """Sentences about each person in random order; `hidden_job` names a person whose job is left out."""
    sentences = []
    for person in people:
        own = [rng.choice(BIRTH_TEMPLATES).format(**person)]
        if person["name"] != hidden_job:
            own.append(rng.choice(JOB_TEMPLATES).format(**person))
        if rng.random() < 0.5:
            own.append(rng.choice(FILLER).format(**person))
        sentences.append(own)
    rng.shuffle(sentences)
    return " ".join(s for own in sentences for s in own)


def _answerable(rng: random.Random, people: list[dict], context: str) -> tuple[str, str, int]:
    target = rng.choice(people)
    kind = rng.choice(list(QUESTION_TEMPLATES))
    question = QUESTION_TEMPLATES[kind].format(**target)
    answer = target[kind]
    # Cities, years and jobs are distinct within a context, so they occur once; a name may recur
    # (filler sentences) and any mention is the same answer text, so take the first.
    start = context.find(answer)
    if start < 0 or (kind != "name" and context.count(answer) != 1):
        raise AssertionError(f"generator bug: {answer!r} is not unique in {context!r}")
    return question, answer, start


def _unanswerable(rng: random.Random, people: list[dict], outsiders: list[dict], hidden_job: str | None) -> str:
    if hidden_job is not None and rng.random() < 0.5:
        return QUESTION_TEMPLATES["job"].format(name=hidden_job)
    outsider = rng.choice(outsiders)
    kind = rng.choice(list(QUESTION_TEMPLATES))
    return QUESTION_TEMPLATES[kind].format(**outsider)


def make_split(
    seed: int, prefix: str, count: int, firsts: list[str], lasts: list[str], unanswerable_share: float
) -> list[dict]:
    """`count` flat SQuAD rows; `unanswerable_share` of them get empty answers."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        people = _people(rng, firsts, lasts, rng.randint(2, 4))
        unanswerable = rng.random() < unanswerable_share
        hidden_job = rng.choice(people)["name"] if unanswerable and rng.random() < 0.5 else None
        context = _context(rng, people, hidden_job)
        if unanswerable:
            present = {p["name"] for p in people}
            outsiders = [
                p for p in _people(rng, firsts, lasts, 6) if p["name"] not in present and p["city"] not in context
            ]
            question = _unanswerable(rng, people, outsiders, hidden_job)
            answers: dict[str, list] = {"text": [], "answer_start": []}
        else:
            question, answer, start = _answerable(rng, people, context)
            answers = {"text": [answer], "answer_start": [start]}
        rows.append(
            {
                "id": f"{prefix}-{n:05d}",
                "title": f"people-{n:05d}",
                "context": context,
                "question": question,
                "answers": answers,
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


# Disjoint name pools: validation people are never seen in training.
TRAIN_NAMES = (FIRST_NAMES[:56], LAST_NAMES[:40])
VALIDATION_NAMES = (FIRST_NAMES[56:], LAST_NAMES[40:])


def make_splits(seed: int = 13, n_train: int = 2000, n_validation: int = 200) -> dict[str, list[dict]]:
    """All bundled splits: v1 (every question answerable) and v2 (about a third unanswerable)."""
    return {
        "train": make_split(seed, "train", n_train, *TRAIN_NAMES, 0.0),
        "validation": make_split(seed + 1, "validation", n_validation, *VALIDATION_NAMES, 0.0),
        "train_v2": make_split(seed + 2, "train-v2", n_train, *TRAIN_NAMES, 1 / 3),
        "validation_v2": make_split(seed + 3, "validation-v2", n_validation, *VALIDATION_NAMES, 1 / 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "accel_tasks/samples/extractive_qa"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in make_splits(args.seed, args.train, args.validation).items():
        write_jsonl(args.out / f"{name}.jsonl", rows)
        empty = sum(not r["answers"]["text"] for r in rows)
        print(f"{name}: {len(rows)} rows, {empty} unanswerable -> {args.out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
