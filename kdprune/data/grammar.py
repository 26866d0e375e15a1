"""Sentence sources for the synthetic corpus (DESIGN §5).

- ``commands``: a smart-home / command-and-control grammar of about 230 words (devices,
  rooms, actions, numbers one … ninety nine, colours, times, names…). A compact domain in
  which every word is heard many times, so a small model trained for CPU-minutes can learn
  it; the ``demo`` and ``tiny`` presets use it. ``vocab_size`` shrinks it.
- ``wordnet``: example sentences quoted in Debian's ``wordnet-base`` glosses
  (/usr/share/wordnet/data.*), normalised; tens of thousands of sentences over a
  vocabulary of thousands of words, for GPU-scale runs (``paper`` preset).

`compose_splits` draws train/dev/test sentence lists: held-out sentences never occur in
train, and every held-out word occurs in train. All randomness comes from
``random.Random(<string seed>)``, which is the same on every machine and Python version.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Protocol

from kdprune.data.manifest import normalise_text

_ONES = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBERS = tuple(
    _ONES + _TEENS + [t if u == 0 else f"{t} {_ONES[u - 1]}" for t in _TENS for u in range(10)]
)  # "one" … "ninety nine", in counting order
_NAMES = tuple("alice bob carol david emma frank grace henry isabel jack kate liam".split())

# Rule name -> alternatives. "{rule}" (a whole token) expands a rule; "" is an empty
# alternative. The order of alternatives matters: `vocab_size` keeps the first ones.
COMMAND_RULES: dict[str, tuple[str, ...]] = {
    "command": (
        "{polite} turn {onoff} the {room} {light}",
        "{polite} dim the {room} lights to {number} percent",
        "{polite} set the temperature in the {room} to {number} degrees",
        "set a timer for {number} {timeunit} {please}",
        "{polite} turn {onoff} the {appliance} in the {room}",
        "{polite} change the {room} lights to {colour}",
        "remind me to {task} at {time} {day}",
        "{polite} {openclose} the {openable} in the {room}",
        "{polite} play some {genre} music in the {room}",
        "what is the temperature in the {room} {now}",
        "{polite} start the {machine} at {time} {daypart}",
        "{polite} add {item} and {item} to the shopping list",
        "send a message to {name} saying {message}",
        "move {names} meeting to {day} at {time}",
        "{polite} {lock} the {door} door and turn off the lights",
        "is the {appliance} in the {room} still {state}",
        "wake me up at {time} {daypart} {day}",
        "{polite} set the {appliance} to {mode} mode",
        "{name} will be home {day} at {time}",
        "{polite} turn the volume {updown} to {number} in the {room}",
        "{polite} stop the {machine} in {number} minutes",
        "{polite} show me the {room} camera on the {screen}",
        "{polite} {raise} the temperature by {small} degrees {now}",
        "when is {names} {event} {day}",
        "make the {room} lights {colour} and set them to {number} percent",
        "{polite} call {name} on the {room} speaker",
        "did anyone open the {door} door {day}",
    ),
    "polite": ("", "please", "could you", "can you", "hey house"),
    "please": ("", "please"),
    "now": ("", "right now", "at the moment"),
    "onoff": ("on", "off"),
    "updown": ("up", "down"),
    "raise": ("raise", "lower", "increase", "decrease"),
    "openclose": ("open", "close"),
    "lock": ("lock", "unlock"),
    "state": ("on", "off", "running", "working"),
    "timeunit": ("minutes", "seconds", "hours"),
    "room": (
        "kitchen",
        "living room",
        "bedroom",
        "bathroom",
        "garage",
        "hallway",
        "office",
        "basement",
        "attic",
        "garden",
        "dining room",
        "nursery",
        "guest room",
        "porch",
    ),  # fmt: skip
    "light": ("lights", "lamp", "ceiling light", "desk lamp", "floor lamp", "night light"),
    "appliance": (
        "fan",
        "heater",
        "air conditioner",
        "television",
        "radio",
        "speaker",
        "computer",
        "kettle",
    ),  # fmt: skip
    "machine": ("dishwasher", "washing machine", "dryer", "oven", "coffee maker", "sprinkler"),
    "openable": ("blinds", "curtains", "windows", "shutters", "garage door"),
    "door": ("front", "back", "garage", "side", "patio"),
    "colour": (
        "red",
        "green",
        "blue",
        "yellow",
        "orange",
        "purple",
        "pink",
        "white",
        "warm white",
        "cool white",
        "gold",
    ),  # fmt: skip
    "genre": ("jazz", "rock", "classical", "pop", "country", "blues", "piano", "dance"),
    "item": (
        "milk",
        "bread",
        "eggs",
        "butter",
        "cheese",
        "apples",
        "bananas",
        "coffee",
        "tea",
        "rice",
        "pasta",
        "tomatoes",
        "orange juice",
    ),  # fmt: skip
    "task": (
        "water the plants",
        "take out the bins",
        "feed the cat",
        "walk the dog",
        "call the dentist",
        "pay the bills",
        "check the mail",
        "charge my phone",
    ),  # fmt: skip
    "message": (
        "i will be home at {time}",
        "the front door is open",
        "call me back {day}",
        "the {machine} is finished",
    ),  # fmt: skip
    "mode": ("eco", "quiet", "turbo", "night"),
    "screen": ("television", "tablet", "phone"),
    "event": ("appointment", "meeting", "birthday", "party"),
    "name": _NAMES,
    "names": tuple(f"{n}'s" for n in _NAMES),
    "day": (
        "today",
        "tomorrow",
        "tonight",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "this weekend",
        "next week",
    ),  # fmt: skip
    "daypart": ("", "in the morning", "in the afternoon", "in the evening", "at night"),
    "time": (
        "{hour} o'clock",
        "{hour} {minute}",
        "half past {hour}",
        "quarter past {hour}",
        "quarter to {hour}",
        "noon",
        "midnight",
    ),  # fmt: skip
    "hour": _NUMBERS[:12],
    "minute": ("fifteen", "thirty", "forty five", "ten", "twenty", "fifty", "five", "forty"),
    "small": _NUMBERS[:10],
    # Teens are drawn as often as tens so that each number word is heard many times.
    "number": ("{digit}", "{teen}", "{tens}", "{tens} {digit}", "{tens} {digit}"),
    "digit": tuple(_ONES),
    "teen": tuple(_TEENS),
    "tens": tuple(_TENS),
}

_REF = re.compile(r"^\{(\w+)\}$")


class SentenceSource(Protocol):
    name: str
    pool: tuple[str, ...] | None  # a fixed list of sentences, or None when generative

    def sample(self, rng: random.Random) -> str: ...

    def vocabulary(self) -> frozenset[str]: ...


class CommandGrammar:
    """The smart-home command grammar, optionally shrunk to at most `vocab_size` words by
    keeping the same leading fraction of every rule's alternatives."""

    name = "commands"
    pool = None

    def __init__(self, vocab_size: int | None = None):
        self.rules = COMMAND_RULES
        if vocab_size is not None:
            lo, hi = 0.0, 1.0  # largest kept fraction whose vocabulary fits
            for _ in range(30):
                mid = (lo + hi) / 2
                if len(_vocabulary(_truncate(COMMAND_RULES, mid))) <= vocab_size:
                    lo = mid
                else:
                    hi = mid
            self.rules = _truncate(COMMAND_RULES, lo)
        self._vocab = _vocabulary(self.rules)

    def sample(self, rng: random.Random) -> str:
        return " ".join(self._expand("command", rng).split())

    def _expand(self, rule: str, rng: random.Random) -> str:
        alt = rng.choice(self.rules[rule])
        out = []
        for tok in alt.split():
            m = _REF.match(tok)
            out.append(self._expand(m.group(1), rng) if m else tok)
        return " ".join(out)

    def vocabulary(self) -> frozenset[str]:
        return self._vocab


def _truncate(rules: dict[str, tuple[str, ...]], frac: float) -> dict[str, tuple[str, ...]]:
    return {k: v[: max(1, math.ceil(frac * len(v)))] for k, v in rules.items()}


def _vocabulary(rules: dict[str, tuple[str, ...]]) -> frozenset[str]:
    """Words reachable from the "command" rule."""
    seen, todo, words = set(), ["command"], set()
    while todo:
        rule = todo.pop()
        if rule in seen:
            continue
        seen.add(rule)
        for alt in rules[rule]:
            for tok in alt.split():
                m = _REF.match(tok)
                if m:
                    todo.append(m.group(1))
                else:
                    words.add(tok)
    return frozenset(words)


WORDNET_DIR = Path("/usr/share/wordnet")


class WordnetSentences:
    """Example sentences from WordNet glosses, normalised; kept when they have
    `min_words`–`max_words` words, no digits (TTS would say them, the transcript would
    not), no single letters but "a"/"i", and only words among the `vocab_size` most
    frequent ones."""

    name = "wordnet"

    def __init__(
        self, vocab_size: int | None = None, min_words: int = 4, max_words: int = 20, root=None
    ):
        sents = _wordnet_examples(Path(root or WORDNET_DIR), min_words, max_words)
        counts = Counter(w for s in sents for w in s.split())
        words = sorted(counts, key=lambda w: (-counts[w], w))
        keep = set(words[:vocab_size] if vocab_size else words)
        self.pool = tuple(s for s in sents if all(w in keep for w in s.split()))
        if not self.pool:
            raise ValueError(f"no WordNet example sentences fit vocab_size={vocab_size}")
        self._vocab = frozenset(w for s in self.pool for w in s.split())

    def sample(self, rng: random.Random) -> str:
        return rng.choice(self.pool)

    def vocabulary(self) -> frozenset[str]:
        return self._vocab


@functools.lru_cache(maxsize=4)
def _wordnet_examples(root: Path, min_words: int, max_words: int) -> tuple[str, ...]:
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"WordNet data files not found under {root} (Debian package wordnet-base)"
        )
    out = set()
    for f in files:
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:  # licence header / no gloss
                continue
            for ex in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                s = normalise_text(ex)
                toks = s.split()
                if not min_words <= len(toks) <= max_words or any(c.isdigit() for c in s):
                    continue
                if any(len(t) == 1 and t not in ("a", "i") for t in toks):
                    continue
                out.add(s)
    return tuple(sorted(out))


def get_grammar(
    name: str, vocab_size: int | None = None, min_words: int = 1, max_words: int = 100
) -> SentenceSource:
    """A sentence source by name: "commands" or "wordnet"."""
    if name == "commands":
        return CommandGrammar(vocab_size)
    if name == "wordnet":
        return WordnetSentences(vocab_size, min_words, max_words)
    raise ValueError(f"unknown grammar {name!r}; valid: ['commands', 'wordnet']")


def vocabulary(name: str = "commands", vocab_size: int | None = None) -> frozenset[str]:
    """All words a grammar can produce (for checks and tests)."""
    return get_grammar(name, vocab_size).vocabulary()


def compose_splits(
    source: SentenceSource,
    counts: dict[str, int],
    seed: int,
    min_words: int = 1,
    max_words: int = 100,
) -> dict[str, list[str]]:
    """Sentences per split, e.g. counts {"train": 6000, "dev": 300, "test": 300}.

    Train sentences are distinct (a fixed pool smaller than the count is cycled through
    again, each rendition by another voice). Every other split gets distinct sentences that
    are not in train nor in another split and whose words all occur in train. Raises
    ValueError when the source cannot supply that many sentences.
    """
    rng = random.Random(f"kdprune-sentences-{source.name}-{seed}")
    fits = lambda s: min_words <= len(s.split()) <= max_words  # noqa: E731
    n_train = counts.get("train", 0)
    if source.pool is not None:
        pool = [s for s in source.pool if fits(s)]
        rng.shuffle(pool)
        # Held-out sentences come from a reserve at the head of the shuffled pool (some are
        # rejected for a word unseen in train); train gets every sentence not held out.
        held_out = sum(n for split, n in counts.items() if split != "train")
        reserve = min(len(pool) // 2, 4 * held_out)
        candidates = iter(pool[:reserve])
        # Train is pool[reserve:] (cycled), then the reserve sentences left unused.
        train_words = {w for s in pool[reserve : reserve + n_train] for w in s.split()}
        used: set[str] = set()
    else:
        candidates = iter(lambda: source.sample(rng), None)
        train = _distinct(candidates, n_train, fits, set(), "train")
        train_words = {w for s in train for w in s.split()}
        used = set(train)
    out = {}
    for split, n in counts.items():
        if split == "train":
            continue

        def ok(s: str) -> bool:
            return fits(s) and all(w in train_words for w in s.split())

        out[split] = _distinct(candidates, n, ok, used, split)
        used.update(out[split])
    if source.pool is not None:
        train_pool = pool[reserve:] + [s for s in pool[:reserve] if s not in used]
        train = [train_pool[i % len(train_pool)] for i in range(n_train)] if train_pool else []
    if "train" in counts:
        out = {"train": train, **out}
    return out


def _distinct(candidates, n: int, ok, used: set[str], split: str) -> list[str]:
    """The first `n` distinct candidates passing `ok` and not in `used`."""
    picked: list[str] = []
    seen = set(used)
    budget = 200 * n + 10_000  # draws before giving up on a too-small grammar
    for s in candidates:
        if len(picked) == n:
            break
        budget -= 1
        if budget < 0:
            break
        if s not in seen and ok(s):
            picked.append(s)
            seen.add(s)
    if len(picked) < n:
        raise ValueError(
            f"could only compose {len(picked)} of {n} distinct {split} sentences; "
            "use a larger vocabulary or fewer utterances"
        )
    return picked
