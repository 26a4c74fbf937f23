// The dashboards, as devtools/build_dashboards.py writes them into dashboards/, with every query's
// default selector replaced by _config.selector.
local defaultSelector = 'job="partnercenter"';
local files = {
  'partnercenter-dap-overview.json': importstr 'dashboards/partnercenter-dap-overview.json',
  'partnercenter-exporter-health.json': importstr 'dashboards/partnercenter-exporter-health.json',
  'partnercenter-gdap-migration.json': importstr 'dashboards/partnercenter-gdap-migration.json',
  'partnercenter-gdap-access.json': importstr 'dashboards/partnercenter-gdap-access.json',
};

{
  grafanaDashboards+:: {
    [name]: std.parseJson(std.strReplace(files[name], std.escapeStringJson(defaultSelector)[1:-1],
                                         std.escapeStringJson($._config.selector)[1:-1]))
    for name in std.objectFields(files)
  },
}
