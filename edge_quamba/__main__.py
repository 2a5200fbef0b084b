from edge_quamba.cli import main

main()
