"""The commands besides `run` and `report` (cli.py): figures, listings, teacher training. Each module
registers its commands on the typer app it is given; all imports of heavy libraries happen inside the
commands, so `--help` and argument errors stay instant."""
