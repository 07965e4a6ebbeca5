from services.safety.app import main

main()
