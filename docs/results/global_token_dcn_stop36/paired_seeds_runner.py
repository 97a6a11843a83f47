"""One-off: paired seeds of arms on a synthetic log (not committed)."""
import csv, json, os, subprocess, sys
teacher, seeds, arms = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
base = f"runs/exp/s36/{teacher}"
os.makedirs(base, exist_ok=True)
out = f"{base}/auc.csv"
done = set()
if os.path.exists(out):
  done = {(r["arm"], r["seed"]) for r in csv.DictReader(open(out))}
else:
  open(out, "w").write("arm,seed,task,auc,gauc\n")
for seed in seeds:
  for arm in arms:
    name, flags = arm.split("=", 1)
    if (name, seed) in done:
      continue
    d = f"runs/synthetic_{teacher}"
    model_dir = f"{base}/{name}/seed{seed}"
    subprocess.run(["rm", "-rf", model_dir])
    cmd = [sys.executable, "-m", "trainer.train", f"--train_files={d}/train-*",
           f"--eval_files={d}/eval-*", f"--schema={d}/schema.json", "--epochs=1",
           "--global_batch_size=256", f"--seed={seed}", f"--permutation_seed={seed}",
           "--deterministic_input", "--checkpoint_every_n_steps=1000000",
           f"--model_dir={model_dir}"] + flags.split()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=open(f"{base}/{name}_{seed}.log", "w"))
    m = json.load(open(f"{model_dir}/metrics.json"))
    with open(out, "a") as f:
      for task, v in m["final"]["tasks"].items():
        f.write(f"{name},{seed},{task},{v['auc']},{v['gauc']}\n")
    print(name, seed, {t: round(v["auc"], 4) for t, v in m["final"]["tasks"].items()}, flush=True)
