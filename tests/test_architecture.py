"""Specification of the library's shape (ARCHITECTURE.md): layers that import only downwards, the course
apart from the core, short modules, a readable training loop, a model file that reads like Figure 3,
and one command line that tells user errors from bugs."""
import ast
import inspect
from pathlib import Path

import pytest

import ditlib
from ditlib import models, train
from ditlib.cli import main
from ditlib.errors import ConfigError, DitlibError

PACKAGE = Path(ditlib.__file__).resolve().parent

# The core's layers, bottom first: a module may import modules of lower layers only (inside functions too).
LAYERS = [
    ["errors"],
    ["runtime", "checkpoints", "layers", "autoencoder", "diffusion_utils"],
    ["data", "diffusion", "models", "unet"],
    ["classifier", "configs", "distributed"],
    ["flops", "metrics"],
    ["vae"],
    ["vae_train", "latents", "interop", "runs"],
    ["sample", "train"],
    ["evaluate", "doctor"],
    ["cli"],
    ["__main__"],
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
MAX_LINES = 450


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(ditlib module imported, names taken from it) for every import in the file, at any depth."""
    package = module_name(path).rpartition(".")[0]          # "" for core modules, "course" for the course
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                target = ".".join([p for p in base if p] + ([node.module] if node.module else []))
            elif node.module and (node.module == "ditlib" or node.module.startswith("ditlib.")):
                target = node.module.removeprefix("ditlib").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            if not target or (node.module is None and node.level):   # `from . import x` / `from ditlib import x`
                found += [(f"{target}.{n}".lstrip(".") if target else n, []) for n in names]
            else:
                found.append((target, names))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("ditlib."), []) for a in node.names if a.name.startswith("ditlib.")]
    return found


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
CORE = [p for p in FILES if p.parent == PACKAGE]
COURSE = [p for p in FILES if p.parent.name == "course"]


def test_every_core_module_has_a_layer():
    assert sorted(module_name(p) for p in CORE) == sorted(LAYER)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.stem)
def test_core_modules_import_only_downwards(path):
    me = module_name(path)
    for target, _ in imports(path):
        top = target.split(".")[0]
        assert top != "course", f"{me} imports the course package ({target}); the core never does"
        assert LAYER[top] < LAYER[me], f"{me} (layer {LAYER[me]}) imports {top} (layer {LAYER[top]}): not downwards"


def test_the_core_import_graph_has_no_cycle():
    graph = {module_name(p): {t.split(".")[0] for t, _ in imports(p)} for p in CORE}
    state = {}

    def visit(node, path):
        if state.get(node) == "open":
            raise AssertionError("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) == "done":
            return
        state[node] = "open"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


@pytest.mark.parametrize("path", FILES, ids=module_name)
def test_no_private_name_crosses_a_module(path):
    for target, names in imports(path):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module_name(path)} imports private {private} from {target}"
    modules = {module_name(p).split(".")[-1] for p in FILES} | {"ckpt"}
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            raise AssertionError(f"{module_name(path)} uses {node.value.id}.{node.attr}, a private name of another module")


def test_checkpoints_are_generic():
    assert [t for t, _ in imports(PACKAGE / "checkpoints.py")] == ["errors"]


@pytest.mark.parametrize("path", COURSE, ids=module_name)
def test_the_course_uses_the_core_and_itself_only(path):
    for target, _ in imports(path):
        top = target.split(".")[0]
        assert top == "course" or top in LAYER, f"{module_name(path)} imports unknown module {target}"


@pytest.mark.parametrize("path", FILES, ids=module_name)
def test_no_module_is_longer_than_450_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_training_loop_fits_on_a_screen():
    assert len(inspect.getsource(train.train).splitlines()) <= 50
    loop = inspect.getsource(train.train)
    assert "train_step(" in loop and "save_checkpoint(" in loop
    # The interrupt path saves through the same function as the regular checkpoints.
    interrupt = loop[loop.index("except KeyboardInterrupt"):loop.index("finally:")]
    assert "save_checkpoint(state" in interrupt


def test_the_model_file_reads_like_figure_3():
    assert "__init__" in vars(models.DiTBlock), "DiTBlock owns its layers"
    forward = inspect.getsource(models.DiTBlock.forward).splitlines()
    assert len(forward) <= 6
    assert len(inspect.getsource(models.DiT.forward).splitlines()) <= 15
    for design, block in models.BLOCKS.items():
        assert list(inspect.signature(block.forward).parameters)[:3] == ["self", "x", "c"], design
    assert "config" not in vars(models.DiT) or not callable(vars(models.DiT)["config"])   # a DiTConfig attribute


def test_a_user_error_is_one_line_and_exit_status_2(capsys):
    assert main(["sample", "--ckpt", "data/checkpoints/fmnist-DiT-T-4", "--num-sampling-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "1 to 1000" in err


def test_a_bug_shows_its_traceback(monkeypatch):
    import ditlib.cli as cli

    def broken(args):
        raise ValueError("a bug, not a user error")            # a plain ValueError is not a DitlibError

    monkeypatch.setattr(cli, "_cmd_export", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["export", "--run", "x", "--out", "y"])


def test_user_errors_keep_their_builtin_kinds():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, DitlibError)
