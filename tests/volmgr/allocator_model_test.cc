// Model-based test of extent allocation: thousands of seeded random create/grow/shrink/delete
// operations on linear, striped and mirrored volumes, each checked against a naive model that
// records the owner of every extent.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "volmgr/allocator.h"

namespace rsio::volmgr {
namespace {

struct ModelVolume {
  LayoutSpec spec;
  std::vector<Segment> segments;
  uint64_t logical = 0;
};

class AllocatorModel {
 public:
  AllocatorModel(std::mt19937_64& rng, int pv_count) : rng_(rng) {
    for (int i = 1; i <= pv_count; ++i) {
      const uint64_t extents = 1 + rng_() % 97;  // odd, uneven sizes
      space_.add_pv(i, extents);
      owner_[i] = std::vector<int>(extents, 0);
    }
  }

  uint64_t naive_free() const {
    uint64_t n = 0;
    for (const auto& [pv, owners] : owner_)
      for (int o : owners) n += o == 0 ? 1 : 0;
    return n;
  }

  // Records the areas of `v` that are not yet owned; every one must have been free.
  void claim(int id, const std::vector<Segment>& segments) {
    for (const Segment& s : segments)
      for (const Area& a : s.areas)
        for (uint64_t e = a.pv_start_extent; e < a.pv_start_extent + a.extent_count; ++e) {
          int& o = owner_.at(a.pv_id).at(e);
          ASSERT_TRUE(o == 0 || o == id)
              << "extent " << e << " of pv " << a.pv_id << " owned by " << o << ", given to " << id;
          o = id;
        }
  }

  void disown(int id) {
    for (auto& [pv, owners] : owner_)
      for (int& o : owners)
        if (o == id) o = 0;
  }

  LayoutSpec random_spec() {
    LayoutSpec s;
    switch (rng_() % 3) {
      case 0:
        break;
      case 1:
        s.layout = Layout::kStriped;
        s.stripes = 2 + static_cast<uint32_t>(rng_() % 2);
        s.stripe_size_bytes = 64 << 10;
        break;
      default:
        s.layout = Layout::kMirrored;
        s.mirrors = 2 + static_cast<uint32_t>(rng_() % 2);
    }
    return s;
  }

  void step() {
    const int op = static_cast<int>(rng_() % 10);
    if (op < 4 || volumes_.empty()) return create();
    auto it = volumes_.begin();
    std::advance(it, static_cast<long>(rng_() % volumes_.size()));
    if (op < 7) return grow(it->first);
    if (op < 9) return shrink(it->first);
    return remove(it->first);
  }

  void create() {
    const int id = next_id_++;
    ModelVolume v;
    v.spec = random_spec();
    const uint64_t unit = v.spec.logical_per_area_extent();
    const uint64_t logical = (1 + rng_() % 40) * unit;
    const uint64_t free_before = space_.free_extents();
    Status st = allocate_extents(space_, v.spec, ctx_, v.segments, logical);
    if (!st) {
      EXPECT_EQ(st.error().code, Errc::kNoSpace);
      EXPECT_EQ(space_.free_extents(), free_before) << "failed allocation leaked extents";
      EXPECT_TRUE(v.segments.empty());
      // Linear allocation may only fail when the pool really lacks the space.
      if (v.spec.layout == Layout::kLinear) {
        EXPECT_LT(free_before, logical);
      }
      ++failures_;
      return;
    }
    v.logical = logical;
    claim(id, v.segments);
    volumes_[id] = std::move(v);
  }

  void grow(int id) {
    ModelVolume& v = volumes_.at(id);
    const uint64_t unit = v.spec.logical_per_area_extent();
    const uint64_t add = (1 + rng_() % 20) * unit;
    const auto before = v.segments;
    const uint64_t free_before = space_.free_extents();
    Status st = allocate_extents(space_, v.spec, ctx_, v.segments, add);
    if (!st) {
      EXPECT_EQ(space_.free_extents(), free_before);
      EXPECT_EQ(v.segments, before) << "failed grow changed the mapping";
      if (v.spec.layout == Layout::kLinear) {
        EXPECT_LT(free_before, add);
      }
      ++failures_;
      return;
    }
    // Growth only appends: the old mapping is a prefix (the last segment may be longer).
    for (size_t i = 0; i + 1 < before.size(); ++i) EXPECT_EQ(v.segments[i], before[i]);
    v.logical += add;
    claim(id, v.segments);
  }

  void shrink(int id) {
    ModelVolume& v = volumes_.at(id);
    const uint64_t unit = v.spec.logical_per_area_extent();
    const uint64_t target = (rng_() % (v.logical / unit + 1)) * unit;
    if (target == 0) return remove(id);
    release_areas(space_, cut_segments(v.spec, v.segments, target));
    v.logical = target;
    disown(id);
    claim(id, v.segments);
  }

  void remove(int id) {
    release_segments(space_, volumes_.at(id).segments);
    volumes_.erase(id);
    disown(id);
  }

  void check_invariants() {
    // Free counts and exact free sets match the model.
    ASSERT_EQ(space_.free_extents(), naive_free());
    for (const auto& [pv, owners] : owner_) {
      const ExtentMap* m = space_.find(pv);
      for (uint64_t e = 0; e < owners.size(); ++e)
        ASSERT_EQ(m->is_free(e, 1), owners[e] == 0) << "pv " << pv << " extent " << e;
    }
    // Every volume maps exactly its logical size and satisfies its layout's rules; the
    // model's owner table says the extents are the volume's own, so none is owned twice.
    for (const auto& [id, v] : volumes_) {
      ASSERT_TRUE(check_segments(v.spec, v.segments))
          << check_segments(v.spec, v.segments).error().message;
      uint64_t mapped =
          v.segments.empty() ? 0 : v.segments.back().start_extent + v.segments.back().extent_count;
      ASSERT_EQ(mapped, v.logical);
      for (const Segment& s : v.segments)
        for (const Area& a : s.areas)
          for (uint64_t e = a.pv_start_extent; e < a.pv_start_extent + a.extent_count; ++e)
            ASSERT_EQ(owner_.at(a.pv_id)[e], id);
    }
  }

  int failures_ = 0;
  size_t volume_count() const { return volumes_.size(); }

 private:
  std::mt19937_64& rng_;
  PoolSpace space_;
  AllocContext ctx_{"model", 4 << 20};
  std::map<int64_t, std::vector<int>> owner_;
  std::map<int, ModelVolume> volumes_;
  int next_id_ = 1;
};

TEST(AllocatorModel, RandomOperationsKeepInvariants) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("RSIO_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "seed " << seed << " (set RSIO_TEST_SEED to replay)\n";
  std::mt19937_64 rng(seed);
  constexpr int kOperations = 12000;
  int done = 0, failures = 0;
  // Several pools of different shapes, so that space runs out and fragments.
  for (int round = 0; done < kOperations; ++round) {
    AllocatorModel model(rng, 1 + static_cast<int>(rng() % 6));
    for (int i = 0; i < 1500 && done < kOperations; ++i, ++done) {
      model.step();
      ASSERT_NO_FATAL_FAILURE(model.check_invariants()) << "seed " << seed << " step " << done;
    }
    failures += model.failures_;
  }
  // The run must exercise both outcomes.
  EXPECT_GT(failures, 0);
  EXPECT_LT(failures, kOperations * 9 / 10);
}

TEST(Allocator, MirrorLegsUseDistinctDevicesAndSayWhatIsMissing) {
  PoolSpace space;
  space.add_pv(1, 200);
  space.add_pv(2, 200);
  LayoutSpec spec{Layout::kMirrored, 1, 0, 3};
  std::vector<Segment> segs;
  Status st = allocate_extents(space, spec, AllocContext{"default", 4 << 20}, segs, 128);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kNoSpace);
  EXPECT_NE(
      st.error().message.find("need 3 distinct devices with 512 MiB free, pool 'default' has 2"),
      std::string::npos)
      << st.error().message;
  EXPECT_EQ(space.free_extents(), 400u);
}

TEST(Allocator, GrowExtendsTheLastSegmentInPlace) {
  PoolSpace space;
  space.add_pv(1, 100);
  LayoutSpec spec;
  std::vector<Segment> segs;
  ASSERT_TRUE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 10));
  ASSERT_TRUE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 5));
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].extent_count, 15u);
  EXPECT_EQ(segs[0].areas[0].extent_count, 15u);
}

TEST(Allocator, LinearVolumeSpansDevicesWhenNoneIsLargeEnough) {
  PoolSpace space;
  space.add_pv(1, 10);
  space.add_pv(2, 10);
  LayoutSpec spec;
  std::vector<Segment> segs;
  ASSERT_TRUE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 15));
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_NE(segs[0].areas[0].pv_id, segs[1].areas[0].pv_id);
  EXPECT_EQ(space.free_extents(), 5u);
}

TEST(Allocator, StripesLandOnDistinctDevices) {
  PoolSpace space;
  for (int i = 1; i <= 3; ++i) space.add_pv(i, 50);
  LayoutSpec spec{Layout::kStriped, 3, 64 << 10, 1};
  std::vector<Segment> segs;
  ASSERT_TRUE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 30));
  ASSERT_EQ(segs.size(), 1u);
  std::set<int64_t> pvs;
  for (const Area& a : segs[0].areas) {
    pvs.insert(a.pv_id);
    EXPECT_EQ(a.extent_count, 10u);
  }
  EXPECT_EQ(pvs.size(), 3u);
}

TEST(Allocator, UnusableDevicesGetNoAllocations) {
  PoolSpace space;
  space.add_pv(1, 10);
  space.add_pv(2, 10);
  space.set_usable(1, false);
  LayoutSpec spec;
  std::vector<Segment> segs;
  EXPECT_FALSE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 11));
  ASSERT_TRUE(allocate_extents(space, spec, AllocContext{"p", 4 << 20}, segs, 10));
  EXPECT_EQ(segs[0].areas[0].pv_id, 2);
}

}  // namespace
}  // namespace rsio::volmgr
