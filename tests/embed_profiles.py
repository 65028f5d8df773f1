"""Copy profiles/*.json into stackboot.py's EMBEDDED_PROFILES block (`make embed`).

The committed stackboot.py must run alone (`curl ... | python3 -`), so it carries
the built-in profiles verbatim; tests/test_delivery.py fails when they drift.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
END = "}  # end of EMBEDDED_PROFILES\n"
BLOCK = re.compile(r"^EMBEDDED_PROFILES = \{\n.*?^" + re.escape(END), re.S | re.M)


def profile_texts(directory=os.path.join(TOP, "profiles")):
    texts = {}
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".json"):
            with open(os.path.join(directory, entry)) as handle:
                texts[entry[:-5]] = handle.read()
    return texts


def render_block(texts):
    parts = ["EMBEDDED_PROFILES = {\n"]
    for name, text in sorted(texts.items()):
        if '"""' in text or text.endswith("\\"):
            raise SystemExit("profiles/%s.json cannot be embedded as a raw string" % name)
        parts.append('    "%s": r"""%s""",\n' % (name, text))
    parts.append(END)
    return "".join(parts)


def embed(source_path=os.path.join(TOP, "stackboot.py")):
    with open(source_path) as handle:
        source = handle.read()
    if not BLOCK.search(source):
        raise SystemExit("no EMBEDDED_PROFILES block in %s" % source_path)
    updated = BLOCK.sub(lambda _: render_block(profile_texts()), source, count=1)
    if updated != source:
        with open(source_path, "w") as handle:
            handle.write(updated)
        print("embedded %d profiles into %s" % (len(profile_texts()), source_path))
    return updated


if __name__ == "__main__":
    embed(*sys.argv[1:])
