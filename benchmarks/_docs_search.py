"""Renderer of the search block (docs/search.md): benchmarks/results/search.json."""

from __future__ import annotations

from typing import Any

from _docgen import Loader, machine_line, num, pct, pp, produced_by, ratio, recipe


def _seeds(values: list[float], fmt: Any) -> str:
    return " / ".join(fmt(v) for v in values)


def _point(p: dict[str, Any], budget: float) -> str:
    """A reported point: validation and test loss, energy, and whether validation kept it within budget."""
    if not p.get("val"):
        return "no finished point"
    flag = "" if p["val_loss_pp"] <= budget + 1e-9 else " (over budget on validation: the most accurate fallback)"
    return (f"validation {pp(p['val_loss_pp'])} pp{flag}, test {pp(p['test_loss_pp'])} pp, energy "
            f"{p['test']['energy'] / 1e6:.2f} M")


def search(load: Loader) -> str:
    d = load("search")
    t, f, hv = d["trial_settings"], d["final_settings"], d["hypervolume"]
    out = [produced_by("search", d["command"]) + f" ({machine_line(d)}). LeNet-5 on {d['dataset']}, "
           f"{d['accelerator']} preset, objectives {' and '.join(d['objectives'])}; {d['trial_budget']} trials per "
           f"study, seeds {', '.join(map(str, d['seeds']))}"
           f"{'; search and random start from the anchors ' + str(d['warm_start']) if d.get('warm_start') else ''}"
           f"; a trial is {t['trial_epochs']} epoch of QAT on "
           f"{num(t['trial_train_limit'])} training images scored on {num(t['trial_val_limit'])} validation images; "
           f"the Pareto set is finished with {f['final_epochs']} epochs on all training images, chosen on the whole "
           f"validation split within {pp(f['budget_pp'])} pp and measured once on test.", ""]
    out.append(f"- Hypervolume (loss pp x energy / dense int8 energy, reference point "
               f"({hv['reference_point']['loss_pp']:g} pp, 1.0)), medians over the seeds: search "
               f"{hv['search']:.3f}, random {hv['random']:.3f}, grid sweep {hv['grid']:.3f}; per seed search "
               f"{_seeds(hv['per_seed']['search'], lambda v: f'{v:.3f}')}, random "
               f"{_seeds(hv['per_seed']['random'], lambda v: f'{v:.3f}')}, grid "
               f"{_seeds(hv['per_seed']['grid'], lambda v: f'{v:.3f}')}.")
    chosen = d["search_chosen"]
    seq = d["sequential"]
    budget = f["budget_pp"]
    gains = d["energy_gain_per_seed"]
    counted = [g for g in gains if g is not None]
    head = (f"{ratio(d['energy_gain_vs_sequential'])} lower energy (median of the {len(counted)} seed(s) where both "
            "sides are within budget on validation" if counted else "none (no seed where both sides are within budget "
            "on validation")
    names = d.get("sequential_rules", ["split"])
    rules = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    cut = d.get("space", {}).get("max_channel_cut", 0.0)
    space_note = (f"; the search's space also cuts up to {pct(cut, 0)} of each channel group's channels, and the "
                  "sequential flow's '+channels' rules cut channels (the structured schedule, "
                  f"{', '.join(pct(x, 0) for x in d.get('sequential_channel_targets', []))}) before pruning weights"
                  if cut else "")
    out.append(f"- Best energy within {pp(budget)} pp against the sequential flow (prune, then quantize, then "
               f"approximate, same budget; the cheapest within budget of its {rules} budget rules{space_note}): "
               f"{head}; per seed {_seeds(gains, lambda g: 'none' if g is None else ratio(g))}).")
    rows = []
    for c, sq in zip(chosen, seq, strict=True):
        kept = c.get("design", {}).get("channels", {})
        cuts = (f" (channels kept {', '.join(f'{k} {v:.2f}' for k, v in kept.items())})" if kept else "")
        seq_ch = sq.get("channel_cut", {}).get("out_channels")
        seq_cuts = f", out channels {', '.join(f'{k} {v}' for k, v in seq_ch.items())}" if seq_ch else ""
        rows.append(f"seed {c['seed']}: search {_point(c, budget)}{cuts}; sequential ({sq.get('rule', 'split')}) "
                    f"sparsity {pct(sq['sparsity'], 0)}{seq_cuts}, {_point(sq, budget)}")
    out += [f"  - {r}" for r in rows]
    within = d.get("search_trials_within_slack")
    if within is not None:
        slack = budget + f["final_slack_pp"]
        finished = [d["search_final_points"][str(s)] for s in d["seeds"]]
        held = [sum(p["val_loss_pp"] <= budget + 1e-9 for p in pts) for pts in finished]
        out.append(f"- The search's finals, per seed: trials within {pp(slack)} pp on the trial images "
                   f"{_seeds(within, str)} of {d['trial_budget']}; points finished "
                   f"{_seeds([len(pts) for pts in finished], str)}; of those within {pp(budget)} pp on validation "
                   f"{_seeds(held, str)}.")
    corner = d.get("energy_corner")
    if corner:
        sp = corner["space"]
        corner_cut = (f", {pct(sp['max_channel_cut'], 0)} of every channel group cut" if sp.get("max_channel_cut")
                      else "")
        out.append(f"- The space's most compressed design (every layer {pct(sp['max_sparsity'], 0)} sparse, "
                   f"{min(sp['weight_bits'])}-bit weights, {min(sp['act_bits'])}-bit activations{corner_cut}, no "
                   "fine-tuning) "
                   f"costs {corner['energy'] / 1e6:.2f} M energy units: the sequential flow's validation energy is "
                   f"{_seeds(corner['sequential_val_energy_over_corner'], ratio)} that, the largest gain any design "
                   "of the space could show at any accuracy.")
    w, r = d["workers"], d["resume"]
    out.append(f"- Workers: {w['trials']} enqueued designs, trial phase {w['median_seconds_1_worker']:.1f} s with 1 "
               f"worker, {w['median_seconds_2_workers']:.1f} s with 2 ({ratio(d['workers_speedup'])}). Resume: a "
               f"{r['trials']}-trial study killed after {r['killed_after_complete']} complete trials ends with "
               f"{r['complete']} complete and {r['failed']} failed (lost {d['resume_lost_trials']}).")
    rn = d.get("resnet20")
    if rn:
        s = rn["settings"]
        pilot = rn["trial_lr_pilot"]
        rows = ", ".join(f"{row['lr']:g}: {pp(row['loss_pp'])} pp" for row in pilot["rows"])
        trials = [x for x in rn["trials"] if x["state"] == "COMPLETE"]
        anchors = len(s.get("warm_start", []))
        sampled = trials[anchors:]
        near = sum(1 for x in sampled if x["loss_pp"] <= s["budget_pp"] + s["final_slack_pp"])
        best = max((x["accuracy"] for x in sampled), default=float("nan"))
        out += ["", f"ResNet-20 on Fashion-MNIST ({num(rn['train_images'])} / {num(rn['val_images'])} / "
                f"{num(rn['test_images'])}; baseline {pct(rn['baseline_test_accuracy'])} test, "
                f"{recipe(rn['baseline_recipe'])}), a smaller budget, one seed: {s['trials']} trials on "
                f"{num(s['trial_train_limit'])} / {num(s['trial_val_limit'])} images, the first {anchors} the "
                f"warm-start "
                f"anchors {s.get('warm_start')}; trial learning rate chosen on the trial images by the 8-bit "
                f"unpruned anchor's loss ({rows}; chosen {pilot['chosen']:g}); {rn['seconds'] / 60:.0f} min."]
        out.append(f"- Sampled trials (after the anchors): {near} of {len(sampled)} within "
                   f"{pp(s['budget_pp'] + s['final_slack_pp'])} pp on the trial images (best trial accuracy "
                   f"{pct(best)} against the baseline's {pct(pilot['baseline_trial_accuracy'])}).")
        c = rn.get("chosen")
        if c:
            e_ratio = rn["baseline"]["energy"] / c["test"]["energy"]
            out.append(f"- Reported point: trial {c['trial']}, sparsity {pct(c['test']['sparsity'])}, test "
                       f"{pct(c['test']['accuracy'])} (loss {pp(c['test_loss_pp'])} pp; validation "
                       f"{pp(c['val_loss_pp'])} pp), energy {ratio(e_ratio)} lower than the float baseline at the "
                       f"accelerator's 16 bits, size {num(c['test']['size_bytes'])} B.")
        else:
            out.append("- No point was finished: no trial came within the finishing slack.")
        out.append(f"- Earlier studies, kept in the file (`first_attempts`): {len(rn['first_attempts'])}, none "
                   "of which had a trial within the slack.")
    return "\n".join(out)
