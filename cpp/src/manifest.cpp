#include "deploykit/manifest.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "deploykit/error.hpp"

namespace dk {
namespace {

using json = nlohmann::json;
constexpr const char* kSchema = "deploykit.manifest";
constexpr int kSchemaVersion = 1;

[[noreturn]] void bad(const Manifest& m, const std::string& what) {
    throw Error("manifest " + m.path.string() + ": " + what + "; re-run 'deploykit export'", kExitArtifact);
}

// j[key] that must exist (path-aware error)
const json& need(const Manifest& m, const json& j, const char* key, const std::string& where) {
    if (!j.is_object() || !j.contains(key)) bad(m, "missing key '" + where + key + "'");
    return j.at(key);
}

std::string str_or(const json& j, const char* key, const std::string& fallback = "") {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
    const json& v = j.at(key);
    if (v.is_string()) return v.get<std::string>();
    return v.dump();  // numbers recorded as numbers ("compute_capability": 8.9 in hand-written files)
}

std::vector<int64_t> int_list(const json& j) {
    std::vector<int64_t> out;
    if (!j.is_array()) return out;
    for (const auto& v : j) out.push_back(v.is_number_integer() ? v.get<int64_t>() : -1);
    return out;
}

std::vector<IoTensor> io_list(const Manifest& m, const json& io, const char* key) {
    std::vector<IoTensor> out;
    const json& list = need(m, io, key, "io.");
    if (!list.is_array() || list.empty()) bad(m, std::string("'io.") + key + "' is not a non-empty list");
    for (const auto& t : list) {
        IoTensor tensor;
        tensor.name = str_or(t, "name");
        if (tensor.name.empty()) bad(m, std::string("an entry of 'io.") + key + "' has no name");
        if (t.contains("dims") && t["dims"].is_array() && t["dims"].size() == 4 && t["dims"][1].is_number_integer())
            tensor.channels = t["dims"][1].get<int64_t>();
        out.push_back(tensor);
    }
    return out;
}

}  // namespace

const IoTensor& Manifest::image_input() const {
    if (inputs.size() != 1) {
        std::string names;
        for (const auto& t : inputs) names += (names.empty() ? "" : ", ") + t.name;
        throw Error(model_name + " takes " + std::to_string(inputs.size()) + " inputs (" + names +
                        "); the C++ runners feed one image input (use 'deploykit infer' for this model)",
                    kExitUsage);
    }
    return inputs.front();
}

const IoTensor& Manifest::image_output() const { return outputs.front(); }

std::vector<int> parse_version(const std::string& text) {
    std::vector<int> parts;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, '.')) {
        if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos) break;
        parts.push_back(std::stoi(item));
    }
    return parts;
}

Manifest read_manifest(const std::filesystem::path& where) {
    Manifest m;
    m.path = std::filesystem::is_directory(where) ? where / "manifest.json" : where;
    m.dir = m.path.has_parent_path() ? m.path.parent_path() : std::filesystem::path(".");
    std::ifstream in(m.path);
    if (!in) {
        throw Error("no manifest at " + m.path.string() + "; run 'deploykit export MODEL' first", kExitArtifact);
    }
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& exc) {
        throw Error("cannot read manifest " + m.path.string() + ": " + exc.what(), kExitArtifact);
    }
    if (str_or(j, "schema") != kSchema) bad(m, "not a deploykit manifest (schema '" + str_or(j, "schema") + "')");
    m.schema_version = j.value("schema_version", 0);
    if (m.schema_version > kSchemaVersion) {
        throw Error("manifest " + m.path.string() + " has schema version " + std::to_string(m.schema_version) +
                        "; these runners read up to " + std::to_string(kSchemaVersion) + ": rebuild them",
                    kExitArtifact);
    }
    try {
        m.model_name = str_or(need(m, j, "model", ""), "name", "?");
        const json& io = need(m, j, "io", "");
        m.inputs = io_list(m, io, "inputs");
        m.outputs = io_list(m, io, "outputs");
        if (io.contains("layout") && io["layout"] != "NCHW") bad(m, "io.layout is not NCHW");
        if (io.contains("value_range")) {
            const json& r = io["value_range"];
            if (!r.is_array() || r.size() != 2 || !(r[1].get<double>() > r[0].get<double>()))
                bad(m, "io.value_range is not [low, high]");
            m.value_lo = r[0].get<float>();
            m.value_hi = r[1].get<float>();
        }
        const json& c = need(m, j, "shape_contract", "");
        m.contract.scale = c.value("scale", 1);
        m.contract.multiple_of = c.value("multiple_of", 1);
        m.contract.min_size = c.value("min_size", 1);
        m.contract.square = c.value("square", false);
        if (m.contract.scale < 1 || m.contract.multiple_of < 1) bad(m, "shape_contract scale / multiple_of < 1");
        if (j.contains("export") && j["export"].is_object() && j["export"].contains("static_hw") &&
            j["export"]["static_hw"].is_array() && j["export"]["static_hw"].size() == 2) {
            m.static_hw = {j["export"]["static_hw"][0].get<int>(), j["export"]["static_hw"][1].get<int>()};
        }
        for (const auto& a : j.value("artifacts", json::array())) {
            m.artifacts.push_back({str_or(a, "kind", "onnx"), str_or(a, "file"), str_or(a, "sha256"),
                                   str_or(a, "device"), str_or(a, "precision"), str_or(a, "torch")});
        }
        for (const auto& e : j.value("engines", json::array())) {
            EngineEntry entry{str_or(e, "key"), str_or(e, "file"), str_or(e, "sha256"),
                              str_or(e, "precision"), str_or(e, "tensorrt"), str_or(e, "compute_capability"),
                              str_or(e, "gpu_name"), str_or(e, "created"), {}};
            if (e.contains("profile") && e["profile"].is_object() && e["profile"].contains("inputs")) {
                for (const auto& [name, p] : e["profile"]["inputs"].items()) {
                    entry.profile[name] = {int_list(p.value("min", json::array())),
                                           int_list(p.value("opt", json::array())),
                                           int_list(p.value("max", json::array()))};
                }
            }
            m.engines.push_back(entry);
        }
    } catch (const json::exception& exc) {
        bad(m, std::string("unexpected value (") + exc.what() + ")");
    }
    return m;
}

}  // namespace dk
