"""Write a tiny two-domain folder in the `split` format (sequences, item map, titles) to argv[1].

Used by .ci/run to build a dataset from a non-editable install; imports nothing of the project.
"""
import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
titles = {"F1": "Organic green tea bags", "F2": "Dark roast coffee beans", "F3": "Matcha powder",
          "K1": "Steel tea kettle", "K2": "Ceramic coffee mug set", "K3": "Bamboo cutting board"}
ids = {asin: [index + 1, 0 if asin.startswith("F") else 1] for index, asin in enumerate(titles)}
(folder / "map_item_6.txt").write_text(json.dumps(ids), encoding="utf-8")
sequences = ["0 1|10 4|20 2|30 5|40 3|50", "1 2|11 5|21 1|31 6|41", "2 4|12 3|22 6|32 1|42 5|52"]
(folder / "fk_preprocessed.txt").write_text("\n".join(sequences) + "\n", encoding="utf-8")
rows = ["asin\tdomain\ttitle"] + [f"{a}\t{'food' if a[0] == 'F' else 'kitchen'}\t{t}" for a, t in titles.items()]
(folder / "titles.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
