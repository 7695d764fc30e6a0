#include "cluster_spec.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "error.h"

namespace aggvm::libvirt {
namespace {

struct DocFree { void operator()(xmlDoc* d) const { xmlFreeDoc(d); } };
struct XPathContextFree { void operator()(xmlXPathContext* c) const { xmlXPathFreeContext(c); } };
struct XPathObjectFree { void operator()(xmlXPathObject* o) const { xmlXPathFreeObject(o); } };
using Doc = std::unique_ptr<xmlDoc, DocFree>;
using XPathContext = std::unique_ptr<xmlXPathContext, XPathContextFree>;
using XPathObject = std::unique_ptr<xmlXPathObject, XPathObjectFree>;

// The domain element, whether the document is a <domain> or libvirt's
// <domstatus> wrapper around one.
constexpr const char* kDomain = "(/domain | /domstatus/domain)";

class Query {
 public:
  explicit Query(xmlDoc* doc) : ctx_(xmlXPathNewContext(doc)) {
    if (!ctx_) fail("out of memory creating an XPath context");
    xmlXPathRegisterNs(ctx_.get(), BAD_CAST "aggvm",
                       BAD_CAST std::string(kMetadataNamespace).c_str());
  }

  std::vector<xmlNode*> nodes(const std::string& path, xmlNode* at = nullptr) {
    ctx_->node = at ? at : xmlDocGetRootElement(ctx_->doc);
    XPathObject obj(xmlXPathEvalExpression(BAD_CAST path.c_str(), ctx_.get()));
    if (!obj) fail("internal error: bad XPath '{}'", path);
    std::vector<xmlNode*> out;
    if (obj->nodesetval)
      for (int i = 0; i < obj->nodesetval->nodeNr; ++i) out.push_back(obj->nodesetval->nodeTab[i]);
    return out;
  }

  std::optional<std::string> text(const std::string& path) {
    auto found = nodes(path);
    if (found.empty()) return std::nullopt;
    xmlChar* content = xmlNodeGetContent(found.front());
    std::string s = content ? reinterpret_cast<const char*>(content) : "";
    xmlFree(content);
    return s;
  }

 private:
  XPathContext ctx_;
};

std::optional<std::string> attribute(xmlNode* node, const char* name) {
  xmlChar* value = xmlGetProp(node, BAD_CAST name);
  if (!value) return std::nullopt;
  std::string s = reinterpret_cast<const char*>(value);
  xmlFree(value);
  return s;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

template <typename T>
T parse_number(std::string_view text, std::string_view what, T lo, T hi) {
  text = trim(text);
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < lo || value > hi)
    fail("{}: '{}' is not a number from {} to {}", what, text, lo, hi);
  return value;
}

bool is_ip_literal(const std::string& address) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, address.c_str(), buf) == 1 || inet_pton(AF_INET6, address.c_str(), buf) == 1;
}

std::string describe_cpus(const std::vector<uint32_t>& ids) {
  if (ids.empty()) return "none";
  return ids.front() == ids.back() ? fmt::format("{}", ids.front())
                                   : fmt::format("{}-{}", ids.front(), ids.back());
}

std::vector<NumaCell> parse_cells(Query& q, uint32_t vcpus) {
  std::vector<NumaCell> cells;
  for (xmlNode* node : q.nodes(std::string(kDomain) + "/cpu/numa/cell")) {
    NumaCell cell;
    auto id = attribute(node, "id");
    cell.id = id ? parse_number<uint32_t>(*id, "<cpu><numa><cell id>", 0, 1023)
                 : static_cast<uint32_t>(cells.size());
    auto cpus = attribute(node, "cpus");
    if (!cpus) fail("<cpu><numa><cell id='{}'> has no cpus attribute", cell.id);
    cell.vcpus = parse_id_list(*cpus, fmt::format("<cell id='{}'> cpus", cell.id));
    cells.push_back(std::move(cell));
  }
  std::sort(cells.begin(), cells.end(), [](auto& a, auto& b) { return a.id < b.id; });
  for (size_t i = 0; i < cells.size(); ++i)
    if (cells[i].id != i) fail("<cpu><numa> cell ids must be 0..{} without gaps", cells.size() - 1);
  for (auto& cell : cells)
    for (uint32_t v : cell.vcpus)
      if (v >= vcpus) fail("<cell id='{}'> names vCPU {}, but <vcpu> is {}", cell.id, v, vcpus);
  return cells;
}

}  // namespace

std::vector<uint32_t> parse_id_list(std::string_view text, std::string_view what) {
  std::vector<uint32_t> ids;
  std::string_view rest = trim(text);
  if (rest.empty()) fail("{}: empty list", what);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const size_t dash = item.find('-');
    if (item.empty() || item.front() == '^')
      fail("{}: '{}' is not a list like 0-3,6", what, text);
    const auto lo = parse_number<uint32_t>(item.substr(0, dash), what, 0, 65535);
    const auto hi = dash == std::string_view::npos ? lo
                                                   : parse_number<uint32_t>(item.substr(dash + 1), what, lo, 65535);
    for (uint32_t i = lo; i <= hi; ++i) ids.push_back(i);
  }
  std::sort(ids.begin(), ids.end());
  if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) fail("{}: '{}' repeats an id", what, text);
  return ids;
}

std::vector<std::string> ClusterSpec::fabric_addresses() const {
  std::vector<std::string> out;
  for (const auto& h : hosts)
    out.push_back(h.address.find(':') != std::string::npos ? fmt::format("[{}]:{}", h.address, h.fabric_port)
                                                           : fmt::format("{}:{}", h.address, h.fabric_port));
  return out;
}

std::vector<uint16_t> ClusterSpec::cell_hosts() const {
  std::vector<uint16_t> out(cells.size(), 0);
  for (const auto& h : hosts)
    for (uint32_t c : h.cells) out.at(c) = h.id;
  return out;
}

std::optional<ClusterSpec> parse_cluster_spec(std::string_view xml) {
  Doc doc(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* e = xmlGetLastError();
    fail("the domain XML does not parse: {}", e && e->message ? trim(e->message) : "unknown error");
  }
  Query q(doc.get());
  if (q.nodes(kDomain).empty()) fail("the document is neither a <domain> nor libvirt's <domstatus>");
  auto clusters = q.nodes(std::string(kDomain) + "/metadata/aggvm:cluster");
  if (clusters.empty()) {
    // A foreign-namespace <cluster> is most likely a typo in xmlns.
    for (xmlNode* n : q.nodes(std::string(kDomain) + "/metadata/*"))
      if (xmlStrEqual(n->name, BAD_CAST "cluster") && n->ns && n->ns->href)
        fail("<metadata><cluster> is in namespace '{}'; aggvm's is '{}'",
             reinterpret_cast<const char*>(n->ns->href), kMetadataNamespace);
    return std::nullopt;
  }
  if (clusters.size() > 1) fail("<metadata> holds {} <aggvm:cluster> elements; one is allowed", clusters.size());
  xmlNode* cluster = clusters.front();

  ClusterSpec spec;
  spec.domain = std::string(trim(q.text(std::string(kDomain) + "/name").value_or("")));
  spec.uuid = std::string(trim(q.text(std::string(kDomain) + "/uuid").value_or("")));
  const auto vcpus = parse_number<uint32_t>(q.text(std::string(kDomain) + "/vcpu").value_or(""),
                                            "<vcpu>", 1, 4096);
  spec.cells = parse_cells(q, vcpus);

  // Every attribute and child is known: a misspelt one is an error, not a
  // silently ignored setting.
  static const std::set<std::string> kClusterAttrs = {"port", "timeout-ms", "noded-port", "cpu-latency-us",
                                                      "dma-prefetch"};
  for (xmlAttr* a = cluster->properties; a; a = a->next)
    if (!kClusterAttrs.count(reinterpret_cast<const char*>(a->name)))
      fail("<aggvm:cluster>: unknown attribute '{}' (known: port, noded-port, timeout-ms, cpu-latency-us, "
           "dma-prefetch)",
           reinterpret_cast<const char*>(a->name));
  const auto port = parse_number<uint16_t>(attribute(cluster, "port").value_or("7100"),
                                           "<aggvm:cluster port>", 1, 65535);
  const auto noded_port = parse_number<uint16_t>(attribute(cluster, "noded-port").value_or("7150"),
                                                 "<aggvm:cluster noded-port>", 1, 65535);
  spec.timeout_ms = parse_number<uint32_t>(attribute(cluster, "timeout-ms").value_or("5000"),
                                           "<aggvm:cluster timeout-ms>", 100, 600000);
  if (auto us = attribute(cluster, "cpu-latency-us"))
    spec.cpu_latency_us = parse_number<uint32_t>(*us, "<aggvm:cluster cpu-latency-us>", 0, 2000000000);
  if (auto on = attribute(cluster, "dma-prefetch")) {
    if (*on != "on" && *on != "off") fail("<aggvm:cluster dma-prefetch>: '{}' is neither 'on' nor 'off'", *on);
    spec.dma_prefetch = *on == "on";
  }

  std::set<uint32_t> placed_cells;
  for (xmlNode* child = cluster->children; child; child = child->next) {
    if (child->type != XML_ELEMENT_NODE) continue;
    const std::string name = reinterpret_cast<const char*>(child->name);
    const bool ours = child->ns && child->ns->href &&
                      std::string_view(reinterpret_cast<const char*>(child->ns->href)) == kMetadataNamespace;
    if (!ours || (name != "host" && name != "secret"))
      fail("<aggvm:cluster>: unknown element <{}> (known: <aggvm:host>, <aggvm:secret>)", name);
    if (name == "secret") {
      if (!spec.secret_file.empty()) fail("<aggvm:cluster> has more than one <aggvm:secret>");
      auto file = attribute(child, "file");
      if (!file || file->empty() || file->front() != '/')
        fail("<aggvm:secret> needs file='/absolute/path' (a file of mode 0600 holding the cluster secret)");
      spec.secret_file = *file;
      continue;
    }
    ClusterHost host;
    auto id = attribute(child, "id");
    if (!id) fail("<aggvm:host> without id (the node id: 0 for the head, then 1, 2, ...)");
    host.id = parse_number<uint16_t>(*id, "<aggvm:host id>", 0, 1023);
    const std::string where = fmt::format("<aggvm:host id='{}'>", host.id);
    for (xmlAttr* a = child->properties; a; a = a->next) {
      const std::string an = reinterpret_cast<const char*>(a->name);
      if (an != "id" && an != "address" && an != "cells" && an != "port" && an != "noded-port")
        fail("{}: unknown attribute '{}' (known: id, address, cells, port, noded-port)", where, an);
    }
    host.address = std::string(trim(attribute(child, "address").value_or("")));
    if (host.address.empty()) fail("{} has no address", where);
    if (!is_ip_literal(host.address))
      fail("{}: address '{}' is not an IPv4 or IPv6 address (names are not resolved, so that "
           "every host agrees on them)", where, host.address);
    host.fabric_port = port;
    host.noded_port = noded_port;
    if (auto p = attribute(child, "port")) host.fabric_port = parse_number<uint16_t>(*p, where + " port", 1, 65535);
    if (auto p = attribute(child, "noded-port"))
      host.noded_port = parse_number<uint16_t>(*p, where + " noded-port", 1, 65535);
    auto cells = attribute(child, "cells");
    if (!cells) fail("{} has no cells (the guest NUMA cells it runs, e.g. cells='1')", where);
    host.cells = parse_id_list(*cells, where + " cells");
    for (uint32_t c : host.cells) {
      if (c >= spec.cells.size())
        fail("{} names cell {}, but the domain's <cpu><numa> has {} cell(s)", where, c, spec.cells.size());
      if (!placed_cells.insert(c).second) fail("cell {} is given to more than one <aggvm:host>", c);
    }
    spec.hosts.push_back(std::move(host));
  }

  std::sort(spec.hosts.begin(), spec.hosts.end(), [](auto& a, auto& b) { return a.id < b.id; });
  if (spec.hosts.size() < 2) fail("<aggvm:cluster> lists {} host(s); an aggregated guest needs 2 or more",
                                  spec.hosts.size());
  for (size_t i = 0; i < spec.hosts.size(); ++i)
    if (spec.hosts[i].id != i)
      fail("<aggvm:host> ids must be 0..{}, each once (host 0 is the head, where libvirt runs)",
           spec.hosts.size() - 1);
  if (spec.secret_file.empty()) fail("<aggvm:cluster> has no <aggvm:secret file='...'/>");
  if (spec.cells.size() < spec.hosts.size())
    fail("the domain has {} NUMA cell(s) for {} hosts: give <cpu><numa> at least one <cell> per host",
         spec.cells.size(), spec.hosts.size());
  for (const auto& cell : spec.cells)
    if (!placed_cells.count(cell.id))
      fail("guest NUMA cell {} (vCPUs {}) has no host: add it to an <aggvm:host cells='...'>", cell.id,
           describe_cpus(cell.vcpus));
  for (const auto& host : spec.hosts)
    if (host.cells.empty()) fail("<aggvm:host id='{}'> runs no cell", host.id);
  std::set<uint32_t> covered;
  for (const auto& cell : spec.cells) covered.insert(cell.vcpus.begin(), cell.vcpus.end());
  if (covered.size() != vcpus) fail("<cpu><numa> cells cover {} of the {} vCPUs; every vCPU needs a cell",
                                    covered.size(), vcpus);
  const auto hosts_of = spec.cell_hosts();
  for (const auto& cell : spec.cells)
    if (std::find(cell.vcpus.begin(), cell.vcpus.end(), 0u) != cell.vcpus.end() && hosts_of[cell.id] != 0)
      fail("vCPU 0 is in cell {}, on host {}; it must be on the head host (id 0, where libvirt "
           "starts node 0)", cell.id, hosts_of[cell.id]);
  return spec;
}

std::optional<ClusterSpec> load_cluster_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_errno(fmt::format("cannot read {}", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_cluster_spec(buf.str());
}

}  // namespace aggvm::libvirt
