"""Spatially blocked cross-validation of the RTM lasso screen.

Synthetic data throughout (geo.synth_rtm / geo.synth: SYNTHETIC town "Harmstead").
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from geo.rtm.factors import factor_from_frame
from geo.rtm.model import (RTMError, RTMGrid, _aggregate, _cv_loglik, _lasso_path, _lasso_screen, build_candidates, cv_folds, default_cv_block, fit_rtm, random_folds, spatial_folds, spatial_influences)
from geo.synth.rtm import make_rtm_town
from test_rtm import _cli, _factor_args


# --------------------------------------------------------------------------- fold assignment
@pytest.fixture(scope="module")
def lattice():
    """A regular 3 km x 2 km lattice of 50 m cells (2,400 cells), not aligned to 300 m blocks at its edges."""
    import shapely

    return RTMGrid.from_area(shapely.box(500_000, 200_000, 503_000, 202_000), 50.0)


def test_spatial_folds_keep_blocks_together_use_every_fold_and_balance(lattice):
    c = lattice.centres()
    assert len(c) == 2400
    # reference: the definition, computed per cell in plain Python (BNG-aligned block = floor(x/300), floor(y/300))
    blocks = pd.Series([f"{int(np.floor(x / 300))},{int(np.floor(y / 300))}" for x, y in c])
    largest = int(blocks.value_counts().max())
    assert largest == 36  # a whole 300 m block holds 6 x 6 cells of 50 m
    for seed in range(10):
        f = spatial_folds(c, 5, 300.0, seed)
        assert f.shape == (2400,)
        assert (pd.Series(f).groupby(blocks).nunique() == 1).all()  # every cell of a block shares its fold
        sizes = np.bincount(f, minlength=5)
        assert set(np.unique(f)) == {0, 1, 2, 3, 4}  # all 5 folds used
        # greedy (each block to the emptiest fold) guarantees sizes differ by at most the largest block:
        # <= 36 cells of a mean 480 (7.5%)
        assert sizes.max() - sizes.min() <= largest, (seed, sizes)
    np.testing.assert_array_equal(spatial_folds(c, 5, 300.0, 7), spatial_folds(c, 5, 300.0, 7))  # same seed
    assert (spatial_folds(c, 5, 300.0, 7) != spatial_folds(c, 5, 300.0, 8)).any()  # another seed, other folds
    # shifting the cells by whole blocks moves no cell to another fold relative to its block-mates
    shifted = spatial_folds(c + 3000.0, 5, 300.0, 7)
    assert (pd.Series(shifted).groupby(blocks).nunique() == 1).all()


def test_too_few_blocks_is_a_clear_error(lattice):
    # a 3 km x 2 km area in one 5 km block (x 500-503 km and y 200-202 km lie in one 5 km square)
    with pytest.raises(RTMError, match=r"only 1 cross-validation block\(s\) of 5000 m .* fewer than the 5 folds; "
                                       r"use a smaller --cv-block or --cv random"):
        spatial_folds(lattice.centres(), 5, 5000.0, 0)
    # 2 blocks of 2 km (x 500-502 and 502-504 km, y 200-202 km): too few for 5 folds, enough for 2
    with pytest.raises(RTMError, match=r"only 2 cross-validation block\(s\) of 2000 m"):
        spatial_folds(lattice.centres(), 5, 2000.0, 0)
    assert set(np.unique(spatial_folds(lattice.centres(), 2, 2000.0, 0))) == {0, 1}  # enough for 2 folds


def test_default_block_side_is_twice_the_largest_influence_at_least_four_cells():
    assert default_cv_block(spatial_influences(100), 50) == 600  # RTMDx steps: 3 blocks x 2
    assert default_cv_block(spatial_influences(200), 100) == 1200
    assert default_cv_block([10, 20, 30], 50) == 200  # 2 x 30 = 60 m < 4 cells of 50 m: the floor


# --------------------------------------------------------------------------- the planted world
@pytest.fixture(scope="module")
def planted_cands():
    world = make_rtm_town(42)  # SYNTHETIC planted truth: pubs within 100 m (RRV 4), schools within 200 m (RRV 2.5)
    facs = [factor_from_frame(k, g, "synthetic " + k) for k, g in world.factors.items()]
    grid = world.extra["grid"]
    inc = world.incidents.filter(period=world.train_period)
    y, _ = grid.counts(inc.frame["x"].to_numpy(), inc.frame["y"].to_numpy())
    cands = build_candidates(grid, facs, spatial_influences(world.block))
    return world, grid, cands, y


# Reference: `_lasso_screen(cands.X, y, cands.meta, 5, seed)` run on this planted world with the code before
# spatial CV (commit b9faf0f: sklearn KFold(5, shuffle=True, random_state=seed) inside _lasso_screen).
OLD_KFOLD = {
    0: {"alpha": 0.00019414024933899962, "nonzero": 21, "positive": 13},
    3: {"alpha": 0.00025889018333908774, "nonzero": 18, "positive": 11},
}
OLD_SCREENED = {"bus_stops_proximity_50", "pubs_proximity_100", "schools_proximity_200", "takeaways_density_200"}


@pytest.mark.parametrize("seed", [0, 3])
def test_random_scheme_reproduces_the_previous_kfold_lasso(planted_cands, seed):
    from sklearn.model_selection import KFold

    _, _, cands, y = planted_cands
    # the folds are sklearn's KFold folds, computed here the old way
    old = np.empty(len(y), int)
    for k, (_, te) in enumerate(KFold(5, shuffle=True, random_state=seed).split(np.arange(len(y)))):
        old[te] = k
    folds, info = cv_folds(cands, seed=seed, cv_scheme="random")
    np.testing.assert_array_equal(folds, old)
    np.testing.assert_array_equal(random_folds(len(y), 5, seed), old)
    assert info == {"cv_scheme": "random", "cv_block_m": None, "cv_block_automatic": False, "cv_blocks": None}
    fit = fit_rtm(cands, y, seed=seed, cv_scheme="random")
    screen_default, lasso_default = _lasso_screen(cands.X, y, cands.meta, 5, seed)  # no folds given: KFold
    for lasso, screen in ((fit.lasso, fit.screen), (lasso_default, screen_default)):
        assert lasso["alpha"] == pytest.approx(OLD_KFOLD[seed]["alpha"], rel=1e-9)
        assert lasso["nonzero"] == OLD_KFOLD[seed]["nonzero"] and lasso["positive"] == OLD_KFOLD[seed]["positive"]
        assert set(screen.loc[screen["screened_in"], "var"]) == OLD_SCREENED
    assert fit.lasso["cv_scheme"] == "random" and fit.lasso["cv_block_m"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spatial_cv_still_selects_exactly_the_planted_factors(planted_cands, seed):
    world, _, cands, y = planted_cands
    fit = fit_rtm(cands, y, seed=seed)  # the default: spatial blocks
    assert fit.lasso["cv_scheme"] == "spatial"
    assert fit.lasso["cv_block_m"] == 600.0 and fit.lasso["cv_block_automatic"]  # 2 x 300 m
    assert fit.lasso["folds"] == 5 and sum(fit.lasso["fold_cells"]) == len(y)
    tab = fit.table.set_index("name")
    assert set(tab.index) == set(world.truth)  # exactly pubs and schools, no decoy
    for name, (form, d, rrv) in world.truth.items():
        assert tab.loc[name, "operationalization"] == form and tab.loc[name, "distance"] == d
        assert tab.loc[name, "ci_low"] <= rrv <= tab.loc[name, "ci_high"]


def test_given_block_side_is_used_and_random_with_a_block_is_refused(planted_cands):
    _, grid, cands, y = planted_cands
    folds, info = cv_folds(cands, seed=0, cv_block=400.0)
    assert info["cv_block_m"] == 400.0 and info["cv_block_automatic"] is False
    np.testing.assert_array_equal(folds, spatial_folds(grid.centres(), 5, 400.0, 0))
    with pytest.raises(RTMError, match="only applies to spatial folds"):
        cv_folds(cands, cv_scheme="random", cv_block=400.0)
    with pytest.raises(RTMError, match="unknown cross-validation scheme"):
        cv_folds(cands, cv_scheme="kfold")


def test_random_folds_are_optimistic_under_spatially_autocorrelated_noise(planted_cands):
    # SYNTHETIC: the planted rate times exp(a smooth Gaussian random field): white noise smoothed over ~4 cells
    # (200 m), SD 0.8 on the log scale, seed 2. No candidate explains the field, so a neighbour in the training
    # data tells the model about a held-out cell. Held-out Poisson log-likelihood per cell over the same penalty
    # path: with random folds it must be higher (optimistic) than with spatial blocks at every penalty, and its
    # optimism at the best penalty larger than in the same world without the field.
    from scipy.ndimage import gaussian_filter

    world, grid, cands, _ = planted_cands
    mu = world.extra["mu"]
    gaps = {}
    for sd in (0.0, 0.8):
        rng = np.random.default_rng(2)
        z = gaussian_filter(rng.standard_normal(grid.inside.shape), 4)[grid.inside]
        y = rng.poisson(mu * np.exp((z - z.mean()) / z.std() * sd)).astype(float)
        U, ys, cnt = _aggregate(cands.X, y)
        alphas = np.asarray(_lasso_path(U, ys, cnt)._alphas, float)
        ll_random = _cv_loglik(cands.X, y, random_folds(len(y), 5, 0), alphas) / len(y)
        ll_spatial = _cv_loglik(cands.X, y, cv_folds(cands, seed=0)[0], alphas) / len(y)
        gaps[sd] = ll_random.max() - ll_spatial.max()
        if sd:
            assert (ll_random > ll_spatial).all(), ll_random - ll_spatial
    assert gaps[0.8] > 0.002  # measured 0.0042 per cell (~850 nats over 19,650 cells)
    assert gaps[0.8] > 10 * abs(gaps[0.0])  # measured 0.00002 without the field


# --------------------------------------------------------------------------- result, API params, CLI
def test_result_records_the_cv_choice_and_params(planted_cands):
    world, _, _, _ = planted_cands
    from geo.rtm.model import risk_terrain

    facs = [factor_from_frame(k, g, "synthetic " + k) for k, g in world.factors.items()]
    res = risk_terrain(world.incidents, facs, world.boundary, period=world.train_period, seed=0, cv_block=900)
    assert res.params["cv_scheme"] == "spatial" and res.params["cv_block_m"] == 900.0
    assert res.summary["lasso"]["cv_block_m"] == 900.0 and not res.summary["lasso"]["cv_block_automatic"]
    c = {ch.name: ch for ch in res.choices}["cross-validation"]
    assert c.value.startswith("5 folds of 900 m spatial blocks") and not c.automatic  # given, so not automatic
    assert "spatial cross-validation" in {ch.name: ch for ch in res.choices}["lasso penalty"].reason
    # too few blocks for the folds: a clear error, before the candidates are built
    with pytest.raises(RTMError, match=r"of 100000 m .*--cv-block or --cv random"):
        risk_terrain(world.incidents, facs, world.boundary, period=world.train_period, cv_block=100000)


def test_api_params_match_the_cli_defaults():
    from pydantic import ValidationError

    from services.runs import RtmParams

    p = RtmParams()
    assert p.cv == "spatial" and p.cv_block is None
    assert RtmParams(cv="random").cv == "random"
    with pytest.raises(ValidationError):
        RtmParams(cv="kfold")
    with pytest.raises(ValidationError):
        RtmParams(cv_block=0)


def test_cli_rtm_cv_default_and_random(town_store, town, tmp_path):
    path = town_store.url if hasattr(town_store, "url") else tmp_path / "town.duckdb"
    town_store.close()
    common = ["rtm", "--store", path, *_factor_args(town, tmp_path), "--cell", 50, "--block", 100,
              "--category", "Violence and sexual offences", "--json"]
    r = _cli(*common, "--out", tmp_path / "a.tif")
    assert r.returncode == 0, r.stderr[-3000:]
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["params"]["cv_scheme"] == "spatial" and obj["params"]["cv_block_m"] == 600.0
    assert obj["lasso"]["cv_scheme"] == "spatial" and obj["lasso"]["cv_block_automatic"] is True
    ch = {c["name"]: c for c in obj["choices"]}["cross-validation"]
    assert ch["automatic"] and "600 m spatial blocks" in ch["value"]
    err = " ".join(r.stderr.split())
    assert "cross-validation set to 5 folds of 600 m spatial blocks" in err  # echoed as an automatic choice

    r = _cli(*common, "--cv", "random", "--out", tmp_path / "b.tif")
    assert r.returncode == 0, r.stderr[-3000:]
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["params"]["cv_scheme"] == "random" and obj["params"]["cv_block_m"] is None
    ch = {c["name"]: c for c in obj["choices"]}["cross-validation"]
    assert ch["value"] == "5 random folds of cells" and not ch["automatic"]
    assert "random cross-validation" in {c["name"]: c for c in obj["choices"]}["lasso penalty"]["reason"]
    assert "pubs" in {f["name"] for f in obj["factors"]}

    r = _cli(*common, "--cv", "random", "--cv-block", 500, "--out", tmp_path / "c.tif")
    assert r.returncode == 2
    assert "--cv-block" in " ".join(r.stderr.split()) and "--cv random" in " ".join(r.stderr.split())
