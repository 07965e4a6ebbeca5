from tranche.cli import main

main()
