"""python -m rolesanywhere_hsm runs the command line."""
from rolesanywhere_hsm.cli import main

main()
