from minimesh.cli import main

main()
