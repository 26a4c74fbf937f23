// The dashboards, as devtools/build_dashboards.py writes them into dashboards/, with every query's
// default selector replaced by _config.selector.
local defaultSelector = 'job="partnercenter"';
// A JSON string's text without its quotes. std.substr, not [1:-1]: jsonnet before 0.20 (Debian
// 12 ships 0.18) refuses negative slice indexes.
local unquoted(text) = std.substr(text, 1, std.length(text) - 2);
local files = {
  'partnercenter-dap-overview.json': importstr 'dashboards/partnercenter-dap-overview.json',
  'partnercenter-exporter-health.json': importstr 'dashboards/partnercenter-exporter-health.json',
  'partnercenter-gdap-migration.json': importstr 'dashboards/partnercenter-gdap-migration.json',
  'partnercenter-gdap-access.json': importstr 'dashboards/partnercenter-gdap-access.json',
};

{
  grafanaDashboards+:: {
    [name]: std.parseJson(std.strReplace(files[name], unquoted(std.escapeStringJson(defaultSelector)),
                                         unquoted(std.escapeStringJson($._config.selector))))
    for name in std.objectFields(files)
  },
}
