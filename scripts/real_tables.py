"""Write real public classification tables that ship inside statsmodels as CSVs the tabular benchmark reads.

    python scripts/real_tables.py fair anes96 --out runs/real-tables
    ptdistill run tabular --set data.path=runs/real-tables/fair.csv ...

Each table is read from the CSV inside the statsmodels wheel (the ``tables`` extra: nothing is
downloaded at run time) and written as ``OUT/NAME.csv``: numeric feature columns and a ``label``
column of class indices, no missing value, rows in the package's order (``ptdistill.splits``
splits them, stratified and seeded). scikit-learn's bundled data sets are left alone on purpose:
they are kept for independent checks.

- ``fair``: Fair (1978), "A Theory of Extramarital Affairs", Journal of Political Economy 86(1),
  45-61; the 1974 Redbook magazine survey of married women, 6,366 rows. ``label`` = 1 when
  ``affairs`` (time spent in extramarital affairs) is above 0, else 0 (32.2% positive), the binary
  outcome of statsmodels' own logit example. Features: ``rate_marriage`` (1-5), ``age``,
  ``yrs_married``, ``children``, ``religious`` (1-4), ``educ`` (years) kept as numbers;
  ``occupation`` and ``occupation_husb`` (codes 1-6, unordered categories) one-hot encoded as
  ``occupation_1`` .. ``occupation_6`` and ``occupation_husb_1`` .. ``occupation_husb_6``: 18 features.
- ``anes96``: the 1996 American National Election Study (public domain), 944 respondents.
  ``label`` = ``vote``, the expected vote: 0 Clinton, 1 Dole (41.6% Dole). Features, all numeric as
  shipped: ``popul`` (census place population, 1000s), ``TVnews`` (days a week), ``selfLR``,
  ``ClinLR``, ``DoleLR`` (1-7 liberal to conservative), ``PID`` (party identification 0-6, strong
  Democrat to strong Republican), ``age``, ``educ`` (1-7), ``income`` (1-24 brackets), ``logpopul``
  (log(popul + 0.1)): 10 features. Under the 2,000 rows the benchmark's default fractions were
  meant for: 189 teacher-train, 94 validation and 189 test rows.
- ``randhie``: the RAND Health Insurance Experiment as used in Cameron and Trivedi (2005),
  Microeconometrics, 20,190 person-years. ``label`` = 1 when ``mdvis`` (outpatient visits to an
  MD in the year) is above 0, else 0 (68.8% positive), the participation part of a hurdle model
  of doctor visits. Features, all numeric as shipped: ``lncoins``, ``idp``, ``lpi``, ``fmde``,
  ``physlm``, ``disea``, ``hlthg``, ``hlthf``, ``hlthp`` (self-rated health one-hot, excellent
  omitted): 9 features. The rows are person-years without a person id, so the same person's
  years fall in different splits (only 2,760 distinct feature rows): the split cannot be grouped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ptdistill from this checkout, installed or not
from ptdistill.extras import require  # noqa: E402


def fair() -> pd.DataFrame:
    """Fair (1978) affairs: 6,366 rows, 18 features, label ``affairs > 0``."""
    from statsmodels.datasets import fair as source

    data = source.load_pandas().data
    categories = ["occupation", "occupation_husb"]
    onehot = [pd.get_dummies(data[c].astype(int), prefix=c, dtype=int) for c in categories]
    features = pd.concat([data.drop(columns=[*categories, "affairs"]), *onehot], axis=1)
    return features.assign(label=(data["affairs"] > 0).astype(int))


def anes96() -> pd.DataFrame:
    """1996 American National Election Study: 944 rows, 10 features, label ``vote`` (1 = Dole)."""
    from statsmodels.datasets import anes96 as source

    data = source.load_pandas().data
    return data.drop(columns="vote").assign(label=data["vote"].astype(int))


def randhie() -> pd.DataFrame:
    """RAND Health Insurance Experiment: 20,190 person-years, 9 features, label ``mdvis > 0``."""
    from statsmodels.datasets import randhie as source

    data = source.load_pandas().data
    return data.drop(columns="mdvis").assign(label=(data["mdvis"] > 0).astype(int))


#: Table name -> the function that builds it from statsmodels' bundled copy.
TABLES: dict[str, Callable[[], pd.DataFrame]] = {"fair": fair, "anes96": anes96, "randhie": randhie}


def export(name: str, out: Path) -> Path:
    """Write table ``name`` (a key of :data:`TABLES`) to ``out/name.csv`` and return the path.

    MissingExtra (naming the ``tables`` extra) without statsmodels; KeyError for an unknown name."""
    require("tables", "scripts/real_tables.py")
    table = TABLES[name]()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    table.to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="+", choices=sorted(TABLES), metavar="NAME",
                        help=f"tables to write: {', '.join(sorted(TABLES))}")
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.csv")
    args = parser.parse_args(argv)
    for name in args.names:
        path = export(name, args.out)
        table = pd.read_csv(path)
        counts = table["label"].value_counts().sort_index().to_dict()
        print(f"{path}: {len(table)} rows, {table.shape[1] - 1} features, label counts {counts}")


if __name__ == "__main__":
    main()
