from netsize.cli import main

main()
