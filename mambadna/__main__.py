from mambadna.cli import main

main()
