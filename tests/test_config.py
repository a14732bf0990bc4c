"""Configuration checking through the real loading path: files written to tmp_path, read by load_config
(and once by ``raspy start``), refused with the file, the line, the key and the reason."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from raspy.curve import init_keys
from raspy.devices.simulated import KINDS as DEVICE_KINDS
from raspy.house.config import ConfigError, load_config
from raspy.house.executive import KINDS, load_kind
from raspy.house.options import markdown_table

HEAD = '[raspy]\nhostname = "pi"\nstate_dir = "state"\n\n'
THERMOSTAT = ('params = {sensor = "/device/pi.fake.t", service = "pi.fake.devices", switch = "heater", '
              'low = %s, high = %s}\n')


def refused(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "house.toml"
    path.write_text(HEAD + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}, line ")
    return caught.value


def line_of(text: str, needle: str) -> int:
    """Line (1-based, counting HEAD) of the first line of ``text`` containing ``needle``."""
    return next(i for i, line in enumerate((HEAD + text).splitlines(), 1) if needle in line)


# -- the typos that used to pass silently -----------------------------------------------

FAKE_TYPO = """[executives.fake]
devices = [
  {name = "aquarium", kind = "cyclic", min = 24.0, max = 27.0, unit = "C", poll = 10},
  {name = "outside", kind = "cyclic", cyle = 60, min = 4.0, max = 16.0},
]
"""


def test_a_misspelt_key_of_a_fake_device_is_refused(tmp_path):
    error = refused(tmp_path, FAKE_TYPO)
    assert error.line == line_of(FAKE_TYPO, "cyle")
    assert error.key == "executives.fake.devices[1].cyle"
    assert "unknown key 'cyle'" in error.reason and "cycle" in error.reason


def test_a_misspelt_key_of_a_device_in_an_array_of_tables_points_at_its_line(tmp_path):
    text = ('[executives.fake]\n\n[[executives.fake.devices]]\nname = "a"\nkind = "switch"\n\n'
            '[[executives.fake.devices]]\nname = "b"\nkind = "cyclic"\n# a comment\nmn = 3\n')
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.fake.devices[1].mn", line_of(text, "mn = 3"))


def test_the_line_is_found_past_strings_comments_and_nesting(tmp_path):
    text = ('[executives.fake]  # devices below\n'
            'devices = [ # a list\n'
            '  {name = "a", kind = "switch", unit = "}, {kind = x"},  # "quotes" ] and brackets\n'
            '\n'
            '  {"name" = \'b\', kind = "linear", start = 1, slope = 2, lower = """ ], { """},\n'
            '  # {name = "d"},\n'
            '  {name = "c", kind = "linear", slope = 1, upper = [1]},\n'
            ']\n')
    error = refused(tmp_path, text)
    # the first refusal: "unit" is no key of a switch, on entry 0's line
    assert (error.key, error.line) == ("executives.fake.devices[0].unit", line_of(text, '"a"'))
    fixed = text.replace(', unit = "}, {kind = x"}', "}")
    error = refused(tmp_path, fixed)
    assert (error.key, error.line) == ("executives.fake.devices[1].lower", line_of(text, "lower ="))
    error = refused(tmp_path, fixed.replace('lower = """ ], { """', "lower = 0"))
    assert (error.key, error.line) == ("executives.fake.devices[2].upper", line_of(text, '"c"'))


def test_the_line_is_found_in_a_table_of_its_own(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    text = '[executives.feeder]\nkind = "feeder:Feeder"\n\n[executives.feeder.tanks]\nreef = 2.0\nguppies = -1\n'
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.feeder.tanks.guppies", line_of(text, "guppies"))


def test_a_misspelt_option_of_an_executive_is_refused_naming_the_known_ones(tmp_path):
    text = '[executives.fake]\ndevics = [{name = "heater", kind = "switch"}]\n'
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.fake.devics", line_of(text, "devics"))
    assert error.reason == "unknown key; known: kind, enabled, devices"


def test_a_thermostat_with_its_marks_the_wrong_way_round_is_refused_at_load(tmp_path):
    text = '[executives.core]\n\n[[executives.core.scenarios]]\nname = "thermostat"\nstartup = true\n' \
           + THERMOSTAT % (25.5, 24.5)
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.core.scenarios[0].params", line_of(text, "params"))
    assert "low mark 25.5 must be below high mark 24.5" in error.reason


@pytest.mark.parametrize("job, key, reason", [
    ('{id = "heat", cron = "0 25 * * *", action = "event"}', "cron", "higher than the maximum value (23)"),
    ('{id = "heat", cron = "0 7 * * *", action = "shout"}', "action", "unknown action 'shout'"),
    ('{id = "heat", cron = "0 7 * * *", action = "event", paused = "no"}', "paused", "'no' is not true or false"),
    ('{id = "heat", intervall = 60, action = "event"}', "intervall", "unknown key 'intervall'"),
    ('{id = "heat", interval = 60, action = "request", service = "pi.fake.devices"}', "command",
     "a request action needs 'service' and 'command' strings"),
])
def test_a_bad_job_is_refused_at_load(tmp_path, job, key, reason):
    text = f'[executives.core]\njobs = [\n  {{id = "ok", interval = 60, action = "event"}},\n  {job},\n]\n'
    error = refused(tmp_path, text)
    assert (error.key, error.line) == (f"executives.core.jobs[1].{key}", line_of(text, '"heat"'))
    assert reason in error.reason


def test_two_jobs_with_one_id_are_refused(tmp_path):
    text = ('[executives.core]\n[[executives.core.jobs]]\nid = "a"\ninterval = 5\naction = "event"\n'
            '[[executives.core.jobs]]\nid = "a"\ninterval = 6\naction = "event"\n')
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.core.jobs[1].id", line_of(text, "interval = 6") - 1)
    assert "jobs[0]" in error.reason


def test_a_scenario_whose_file_is_missing_is_refused_at_load(tmp_path):
    text = '[executives.core]\nscenarios = [{name = "porch", file = "porch_lights.py"}]\n'
    error = refused(tmp_path, text)
    assert (error.key, error.line) == ("executives.core.scenarios[0].file", line_of(text, "porch"))
    assert "no scenario file porch_lights.py in " in error.reason


def test_a_scenario_file_in_the_owners_directory_is_found_and_its_check_runs(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "porch.py").write_text("def check(params):\n    if params.get('lux', 0) <= 0:\n"
                                     "        raise ValueError('lux must be positive')\n\ndef run(ctx):\n    pass\n")
    path = tmp_path / "house.toml"
    good = f'[executives.core]\nscenarios_dir = "{folder}"\nscenarios = [{{name = "porch", params = {{lux = 5}}}}]\n'
    path.write_text(HEAD + good)
    assert load_config(path).executives["core"].options["scenarios"][0]["params"] == {"lux": 5}
    error = refused(tmp_path, good.replace("lux = 5", "lux = 0"))
    assert error.key == "executives.core.scenarios[0].params" and error.reason == "lux must be positive"


@pytest.mark.parametrize("table, key, reason", [
    ('[executives.titanic]\nretention = "week"\n', "retention", "'week' is not a number > 0"),
    ('[executives.titanic]\nrequest_workers = 0\n', "request_workers", "0 is not an integer >= 1"),
    ('[executives.titanic]\nretry_min = 5\nretry_max = 1\n', "retry_min", "5 is more than retry_max 1"),
    ('[executives.web]\nport = 70000\n', "port", "70000 is not a port number (0-65535)"),
    ('[executives.core]\nmissed = "later"\n', "missed", "'later' is not one of 'run_once', 'skip'"),
    ('[executives.core]\nallow_remote_code = "yes"\n', "allow_remote_code", "'yes' is not true or false"),
    ('[executives.onewire]\npoll = 1.5\n', "poll", "1.5 is not an integer >= 0"),
    ('[executives.kv]\nflush_interval = -1\n', "flush_interval", "-1 is not a number > 0"),
    ('[executives.broker]\nbind = "localhost:5514"\n', "bind", "'localhost:5514' is not a ZeroMQ endpoint"),
    ('[executives.echo]\ndelay = true\n', "delay", "True is not a number >= 0"),
    ('[executives.fake]\ndevices = [{name = "x", kind = "switch", poll = -5}]\n', "devices[0].poll",
     "poll must be 0 (not polled) or a positive number of seconds"),
    ('[executives.fake]\ndevices = [{name = "x", kind = "switch"}, {name = "x", kind = "switch"}]\n',
     "devices[1].name", "devices[0] has the name 'x' too"),
])
def test_every_kind_checks_its_options(tmp_path, table, key, reason):
    error = refused(tmp_path, table)
    name = table.split("]")[0].removeprefix("[executives.")
    assert error.key == f"executives.{name}.{key}"
    assert error.reason == reason or error.reason.endswith(reason)
    assert error.line == line_of(table, key.split(".")[0].split("[")[0] + " =")


def test_a_kind_of_ones_own_that_declares_nothing_accepts_anything(tmp_path):
    path = tmp_path / "house.toml"
    path.write_text(HEAD + '[executives.crash]\nkind = "supervised_kinds:Crash"\npump = "gpio17"\nlevels = [1, 2]\n')
    assert load_config(path).executives["crash"].options == {"pump": "gpio17", "levels": [1, 2]}


def test_a_kind_of_ones_own_that_declares_its_options_is_checked(tmp_path):
    text = '[executives.freezer]\nkind = "supervised_kinds:Freezer"\nfreeze = "flag"\ndelay = 0.1\nfreez = "x"\n'
    error = refused(tmp_path, text)
    assert (error.key, error.reason) == ("executives.freezer.freez", "unknown key; known: kind, enabled, delay, freeze")


def test_defaults_are_not_written_into_the_options(tmp_path):
    """What the file says is what the executive gets; a kind reads its declared defaults itself."""
    path = tmp_path / "house.toml"
    path.write_text(HEAD + "[executives.titanic]\nretention = 60\n")
    assert load_config(path).settings("titanic").options == {"retention": 60}


# -- the docs ----------------------------------------------------------------------------

DOCS = ROOT / "docs"


def blocks(marker: str) -> dict[str, str]:
    """The table after each ``<!-- marker -->`` in the docs, by file name."""
    found = {}
    for path in sorted(DOCS.glob("*.md")):
        for match in re.finditer(rf"<!-- {re.escape(marker)} -->\n(\|.*?\n)(?!\|)", path.read_text(), re.S):
            found[path.name] = match.group(1).rstrip("\n")
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_docs_list_each_kinds_options_as_it_declares_them(kind):
    table = markdown_table(load_kind(kind).options)
    tables = blocks(f"options: {kind}")
    assert "configuration.md" in tables, f"docs/configuration.md should list {kind}'s options:\n{table}"
    for name, text in tables.items():
        assert text == table, f"docs/{name} should list {kind}'s options as:\n{table}"


def test_the_docs_list_the_keys_of_each_fake_device_kind():
    rows = ["| kind | keys (default) |", "|---|---|"]
    for kind, cls in DEVICE_KINDS.items():
        keys = [f"`{key}`" if value is None else f"`{key}` ({str(value).lower()})"
                for key, value in cls.template.items() if key != "kind"]
        rows.append(f"| `{kind}` | {', '.join(['`name`', *keys])} |")
    assert blocks("devices of fake") == {"configuration.md": "\n".join(rows)}, "\n".join(rows)


def test_the_toml_examples_of_the_docs_are_accepted(tmp_path, monkeypatch):
    """With the owner's pieces they name: kinds of one's own and a scenario file."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "state" / "raspy" / "scenarios").mkdir(parents=True)
    (tmp_path / "state" / "raspy" / "scenarios" / "frost-alarm.py").write_text("def run(ctx):\n    pass\n")
    (tmp_path / "state" / "raspy" / "mqtt-password").write_text("secret\n")
    init_keys(tmp_path / "state" / "raspy")  # what `raspy keys init` makes for the CURVE examples
    (tmp_path / "myhouse").mkdir()
    (tmp_path / "myhouse" / "__init__.py").write_text("")
    (tmp_path / "myhouse" / "aquarium.py").write_text("from raspy.house.executive import Executive\n\n\n"
                                                      "class Aquarium(Executive):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # PYTHONPATH=examples, as the guides say
    examples = [(path.name, text) for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
                for text in re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)]
    assert len(examples) >= 8
    for index, (name, text) in enumerate(examples):
        path = tmp_path / f"example{index}.toml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            pytest.fail(f"an example of {name} is refused: {exc}")


# -- the command -------------------------------------------------------------------------

def test_raspy_start_refuses_a_typo_with_one_line_naming_file_line_and_key(tmp_path):
    path = tmp_path / "house.toml"
    path.write_text(HEAD + FAKE_TYPO)
    result = subprocess.run([sys.executable, "-m", "raspy", "start", "--config", str(path)], capture_output=True,
                            text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}, line {line_of(FAKE_TYPO, 'cyle')}: "
                                     f"executives.fake.devices[1].cyle: unknown key 'cyle'; known: ")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (tmp_path / "state").exists()  # nothing was started
