"""Copy profiles/*.json into stackboot.py's EMBEDDED_PROFILES block, and
profiles/clusters/*.json into EMBEDDED_CLUSTERS (`make embed`).

The committed stackboot.py must run alone (`curl ... | python3 -`), so it carries
the built-in profiles and clusters verbatim; tests/test_delivery.py fails when they drift.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BLOCKS = {"EMBEDDED_PROFILES": os.path.join(TOP, "profiles"), "EMBEDDED_CLUSTERS": os.path.join(TOP, "profiles", "clusters")}


def block_re(name):
    return re.compile(r"^%s = \{\n.*?^\}  # end of %s\n" % (name, name), re.S | re.M)


def profile_texts(directory=os.path.join(TOP, "profiles")):
    texts = {}
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".json"):
            with open(os.path.join(directory, entry)) as handle:
                texts[entry[:-5]] = handle.read()
    return texts


def render_block(texts, name="EMBEDDED_PROFILES"):
    parts = ["%s = {\n" % name]
    for key, text in sorted(texts.items()):
        if '"""' in text or text.endswith("\\"):
            raise SystemExit("%s.json cannot be embedded as a raw string" % key)
        parts.append('    "%s": r"""%s""",\n' % (key, text))
    parts.append("}  # end of %s\n" % name)
    return "".join(parts)


def embed(source_path=os.path.join(TOP, "stackboot.py")):
    with open(source_path) as handle:
        source = handle.read()
    updated = source
    for name, directory in BLOCKS.items():
        if not block_re(name).search(updated):
            raise SystemExit("no %s block in %s" % (name, source_path))
        updated = block_re(name).sub(lambda _: render_block(profile_texts(directory), name), updated, count=1)
    if updated != source:
        with open(source_path, "w") as handle:
            handle.write(updated)
        print("embedded %d profiles and %d clusters into %s" % (
            len(profile_texts()), len(profile_texts(BLOCKS["EMBEDDED_CLUSTERS"])), source_path))
    return updated


if __name__ == "__main__":
    embed(*sys.argv[1:])
