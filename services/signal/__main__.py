from services.signal.app import main

main()
