from services.ledger.app import main

main()
