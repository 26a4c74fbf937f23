from exporter.platform_check import main

raise SystemExit(main())
