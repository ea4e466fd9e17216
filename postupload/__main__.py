from postupload.cli import main

main()
