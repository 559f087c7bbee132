"""The kappa experiment of the corrected-EI paper (sec. 4.2) from one comparison's runs.json.

For each kappa: where the termination rule would have stopped each run (from the recorded
acquisition values, no rerun), the regret there, the profit ``(r_0 - r_T) - cost * T``, and the
Wilcoxon test of CEI's regret at the stop against each other acquisition. Prints a Markdown
table; ``--plot`` writes the profit curve (as the paper's figure 2).

    python scripts/kappa_sweep.py RUNS_JSON --kappas 1e-4 1e-3 1e-2 [--cost 0.001]
        [--rule best_evaluated] [--relative] [--plot profit.png]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from compressbo.exceptions import UserInputError
from compressbo.experiments.kappa import plot_profit, summary_table, sweep
from compressbo.experiments.report import load_comparison
from compressbo.experiments.scores import SCORE_FIELDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a comparison's runs.json (or its directory)")
    parser.add_argument("--kappas", type=float, nargs="+", required=True, help="termination thresholds")
    parser.add_argument("--cost", type=float, default=0.0, help="cost per BO iteration in score units (0)")
    parser.add_argument("--rule", choices=list(SCORE_FIELDS), default="recommendation", help="scoring rule of the regret (recommendation)")
    parser.add_argument("--relative", action="store_true", help="kappa as a fraction of each run's initial spread max y - min y")
    parser.add_argument("--reference", default="cei", help="acquisition the others are tested against (cei)")
    parser.add_argument("--plot", help="write the profit curve to this PNG")
    args = parser.parse_args(argv)
    path = Path(args.runs)
    try:
        comparison = load_comparison(path if path.is_dir() else path.parent)
        stops = sweep(comparison, args.kappas, args.rule, args.relative)
        if not stops:
            raise UserInputError(f"{path}: no runs of an acquisition the kappa rule applies to")
        scale = "x initial spread" if args.relative else "objective units"
        print(f"{comparison['problem']['name']}: rule {args.rule}, kappa in {scale}, "
              f"at most {comparison['settings']['iterations']} iterations per run\n")
        print(summary_table(stops, args.cost, args.reference))
        if args.plot:
            plot_profit(stops, args.cost, args.plot, f"{comparison['problem']['name']}: profit at the kappa stop")
            print(f"\nwrote {args.plot}")
    except UserInputError as error:
        print(f"kappa_sweep: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
