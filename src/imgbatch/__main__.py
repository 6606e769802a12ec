from imgbatch.cli import main

main()
