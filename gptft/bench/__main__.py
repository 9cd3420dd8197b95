from .orchestrate import main

raise SystemExit(main())
