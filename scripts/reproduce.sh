# Issue 6: every experiment of docs/results.md through `ptdistill run`, then the report from MLflow.
# Runs land in ./mlflow.db and ./runs (the teacher cache makes re-runs of the same teacher cheap).
#   bash scripts/reproduce.sh            # all experiments (1 h 50 min on 2 CPU cores for 1-7, about 3 h more for 8; times in docs/results.md)
#   bash scripts/reproduce.sh report     # only rebuild docs/results/ from what MLflow holds
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
PTD=.venv/bin/ptdistill
EXP=docs/experiments
run() { echo "== $*" >&2; /usr/bin/time -f "   %e s wall-clock" "$PTD" run "$@"; }

if [ "${1:-all}" != report ]; then
  run synthetic --config "$EXP/synthetic_methods.yaml" --run-name exp1-methods
  run synthetic --config "$EXP/synthetic_proxy_distance.yaml" --run-name exp2-proxy-distance
  run synthetic --config "$EXP/synthetic_search_vs_random.yaml" --run-name exp3-search-vs-random
  run rotten-tomatoes --config "$EXP/rotten_tomatoes_methods.yaml" --run-name exp4-rotten-tomatoes
  for epochs in 2 5 10 25 100; do
    run synthetic --config "$EXP/synthetic_kl_vs_ptloss.yaml" --set teacher.train.epochs=$epochs \
      --run-name "exp5-teacher-epochs-$epochs"
  done
  run synthetic --config "$EXP/synthetic_kl_vs_ptloss.yaml" --set search.strategy=implicit \
    --run-name exp6-implicit
  for criterion in q brier nll; do
    run synthetic --config "$EXP/synthetic_kl_vs_ptloss.yaml" --set search.criterion=$criterion \
      --run-name "exp7-criterion-$criterion"
  done
  # Experiment 8a: the teacher's checkpoint (teacher.train.select) x student early stopping, two teachers.
  for tseed in 0 1; do
    run synthetic --config "$EXP/synthetic_selection.yaml" --set teacher.train.seed=$tseed --run-name "exp8a-teacher$tseed-last"
    for teacher_select in nll accuracy; do
      run synthetic --config "$EXP/synthetic_selection.yaml" --set teacher.train.seed=$tseed \
        --set teacher.train.select=$teacher_select --set teacher.train.patience=5 --run-name "exp8a-teacher$tseed-$teacher_select"
    done
  done
  # Experiment 8b: the same on real text, today's teacher (final weights) against the NLL-selected one.
  run rotten-tomatoes --config "$EXP/rotten_tomatoes_selection.yaml" --set teacher.train.select=last --run-name exp8b-teacher-last
  run rotten-tomatoes --config "$EXP/rotten_tomatoes_selection.yaml" --set teacher.train.select=nll \
    --set teacher.train.patience=1 --run-name exp8b-teacher-nll
  # Experiment 8c: real tables bundled with statsmodels (the 'tables' extra), each under the paper's
  # recipe (final weights) and the best one (teacher and students stopped on validation NLL).
  .venv/bin/python scripts/real_tables.py fair anes96 --out runs/real-tables
  for table in fair anes96; do
    for recipe in paper best; do
      run tabular --config "$EXP/tabular_real_tables.yaml" --set data.path=runs/real-tables/$table.csv --set recipe=$recipe --run-name "exp8c-$table-$recipe"
    done
  done
fi

OUT=docs/results
"$PTD" report synthetic --out "$OUT/exp1" --run exp1-methods
"$PTD" report synthetic --out "$OUT/exp2" --run exp2-proxy-distance
"$PTD" report synthetic --out "$OUT/exp3" --run exp3-search-vs-random $(printf -- "--pair searched_o%s,random_o%s " 1 1 2 2 3 3 4 4 5 5)
"$PTD" report rotten-tomatoes --out "$OUT/exp4" --run exp4-rotten-tomatoes
"$PTD" report synthetic --out "$OUT/exp5" $(printf -- "--run exp5-teacher-epochs-%s " 2 5 10 25 100)
"$PTD" report synthetic --out "$OUT/exp6" --run exp6-implicit --run exp7-criterion-q
"$PTD" report synthetic --out "$OUT/exp7" --run exp7-criterion-q --run exp7-criterion-brier --run exp7-criterion-nll
for tseed in 0 1; do
"$PTD" report synthetic --out "$OUT/exp8a/teacher$tseed" --baseline "exp8a-teacher$tseed-last:kl" $(printf -- "--run exp8a-teacher$tseed-%s " last accuracy nll)
done
"$PTD" report rotten-tomatoes --out "$OUT/exp8b" --run exp8b-teacher-last --run exp8b-teacher-nll --baseline exp8b-teacher-last:kl
"$PTD" report tabular --out "$OUT/exp8c/fair" --run exp8c-fair-paper --run exp8c-fair-best \
  $(printf -- "--pair exp8c-fair-best:%s,exp8c-fair-paper:%s " kl kl ptloss ptloss label_smoothing label_smoothing)
"$PTD" report tabular --out "$OUT/exp8c/anes96" --run exp8c-anes96-paper --run exp8c-anes96-best \
  $(printf -- "--pair exp8c-anes96-best:%s,exp8c-anes96-paper:%s " kl kl ptloss ptloss label_smoothing label_smoothing)
