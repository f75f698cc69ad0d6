#include "tests/support/smtp_transcript.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace mailgate::test {

std::vector<TranscriptStep> load_transcript(const std::filesystem::path& file, const std::map<std::string, std::string>& vars) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::vector<TranscriptStep> steps;
  for (std::string l; std::getline(in, l);) {
    if (l == "C:") l = "C: ";
    if (l.size() < 3 || l[0] == '#') continue;
    std::string text = l.substr(3);
    for (const auto& [name, value] : vars)
      for (std::size_t at; (at = text.find(name)) != std::string::npos;) text.replace(at, name.size(), value);
    const std::string kind = l.substr(0, 3);
    if (kind == "S: ") {
      steps.push_back({false, text});
    } else if (kind == "R: ") {
      if (steps.empty() || !steps.back().client) throw std::runtime_error(file.string() + ": R: must follow a client step");
      const auto repeated = steps.back();
      for (int n = std::stoi(text); n > 1; --n) steps.push_back(repeated);
    } else if (kind == "C: " || kind == "C~ ") {
      std::string bytes;
      for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          const char n = text[++i];
          bytes += n == 'r' ? '\r' : n == 'n' ? '\n' : n == 't' ? '\t' : n;
        } else {
          bytes += text[i];
        }
      }
      steps.push_back({true, kind == "C: " ? bytes + "\r\n" : bytes});
    } else {
      throw std::runtime_error(file.string() + ": a line must start with S:, C:, C~ or R: -- " + l);
    }
  }
  return steps;
}

std::vector<std::filesystem::path> smtp_transcripts() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(MAILGATE_SOURCE_DIR) / "tests/transcripts/smtp"))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

bool transcript_line_matches(const std::string& pattern, const std::string& line) {
  return fnmatch(pattern.c_str(), line.c_str(), 0) == 0;
}

}  // namespace mailgate::test
